"""Hostile load on a real server: CPU-heavy requests must not stall the event loop, a
full work queue answers 503 with Retry-After, and an image over the decoded-pixel limit
is refused with 413 before it is decoded.

One real ``imgclass serve`` in a subprocess on 127.0.0.1 (one worker thread, a queue of
one request, a 3 s deadline), a real ONNX bundle built without training.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from durable_support import digits_bundle as linear_bundle
from durable_support import free_port
from PIL import Image


def request(
    port: int, method: str, path: str, body: bytes | None = None, ctype: str = "application/json"
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body, {"Content-Type": ctype} if body is not None else {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[int]:
    root = tmp_path_factory.mktemp("stall")
    bundle = linear_bundle(root / "bundle")
    port = free_port()
    env = {
        **os.environ,
        "IMGCLASS_WORK_THREADS": "1",
        "IMGCLASS_MAX_QUEUE": "1",
        "IMGCLASS_REQUEST_TIMEOUT": "3",
    }
    cmd = [sys.executable, "-m", "imgclass", "serve", "--model", str(bundle), "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--feedback-db", str(root / "fb.sqlite3")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(600):
            try:
                if request(port, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the server did not start")
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


def heavy_batch() -> bytes:
    """The most a batch may hold: 32 drawings of 500 strokes (seconds of rendering)."""
    rng = np.random.default_rng(0)
    items = [
        {"strokes": [rng.integers(0, 1000, size=(2, 4)).tolist() for _ in range(500)]}
        for _ in range(32)
    ]
    return json.dumps({"items": items}).encode()


def work_queue(port: int) -> float:
    text = request(port, "GET", "/metrics")[2].decode()
    line = [ln for ln in text.splitlines() if ln.startswith("imgclass_work_queue ")]
    return float(line[0].split()[1]) if line else 0.0


@contextmanager
def slow_request_in_progress(port: int) -> Iterator[dict[str, object]]:
    """A heavy batch that the server has started working on; on exit, its outcome."""
    outcome: dict[str, object] = {}
    body = heavy_batch()

    def send() -> None:
        status, _, data = request(port, "POST", "/v1/predict/batch", body)
        outcome.update(status=status, detail=json.loads(data).get("detail"))

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 10
    while work_queue(port) < 1:  # /metrics answers: the loop is free while it works
        assert sender.is_alive(), f"the heavy batch finished before it was seen: {outcome}"
        assert time.monotonic() < deadline, "the server never reported the batch as working"
        time.sleep(0.02)
    try:
        yield outcome
    finally:
        sender.join(60)


def test_healthz_answers_while_a_heavy_batch_is_rendered(server):
    with slow_request_in_progress(server) as outcome:
        status, _, body = request(server, "GET", "/healthz")
        # ordering, not timing: the batch was still being worked on after /healthz answered
        still_working = work_queue(server) >= 1 and not outcome
    assert status == 200 and json.loads(body) == {"status": "ok"}
    assert still_working, "/healthz waited for the heavy batch"
    # the batch either finished or hit the 3 s deadline, with a clear answer
    assert outcome["status"] in (200, 504), outcome
    if outcome["status"] == 504:
        assert "did not finish within 3 s" in str(outcome["detail"])


def test_a_full_queue_answers_503_with_retry_after(server):
    canvas = io.BytesIO()
    Image.new("L", (280, 280), 255).save(canvas, "PNG")
    boundary = "x0x0x0"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + canvas.getvalue()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    ctype = f"multipart/form-data; boundary={boundary}"
    with slow_request_in_progress(server) as outcome:
        status, headers, body = request(server, "POST", "/v1/predict", form, ctype)
        refused_while_busy = work_queue(server) >= 1 and not outcome
    assert refused_while_busy
    assert status == 503, body
    assert headers.get("retry-after") == "1"
    assert (
        "busy" in json.loads(body)["detail"] and "IMGCLASS_MAX_QUEUE" in json.loads(body)["detail"]
    )
    # abandoned work still counts until it stops (between batch items); then the same
    # request is answered
    until = time.monotonic() + 30
    while work_queue(server) > 0 and time.monotonic() < until:
        time.sleep(0.05)
    status, _, body = request(server, "POST", "/v1/predict", form, ctype)
    assert status == 200 and len(json.loads(body)["predictions"]) == 3


def test_an_image_over_the_pixel_limit_is_413_naming_the_limit(server):
    big = io.BytesIO()
    Image.new("L", (4097, 4097), 255).save(big, "PNG")  # 16.8 MP in ~20 KB
    body = json.dumps({"image_base64": base64.b64encode(big.getvalue()).decode()})
    status, _, answer = request(server, "POST", "/v1/predict", body.encode())
    assert status == 413
    detail = json.loads(answer)["detail"]
    assert "4097x4097" in detail and f"at most {4096 * 4096} pixels" in detail
    assert "IMGCLASS_MAX_IMAGE_PIXELS" in detail
