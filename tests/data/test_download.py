"""The download engine against a real HTTP server on 127.0.0.1 that cuts, fails and misbehaves.

``LocalServer`` is also used by ``test_cli_fetch.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from imgclass.data import download as dl
from imgclass.data.download import Downloaded, Expected, RetryPolicy, download
from imgclass.errors import ConfigError, DownloadError

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, timeout=5)
PAYLOAD = bytes(range(256)) * 400  # 100 kB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def etag_of(data: bytes) -> str:
    return '"' + hashlib.sha1(data).hexdigest() + '"'


class LocalServer:
    """Serves ``files`` (URL path -> bytes) over HTTP/1.1 with Range, If-Range and HEAD.

    Switches: ``cut_after`` (send only this many body bytes, then close; once, or on every
    response with ``cut_every``), ``fail_times`` (answer 500 first), ``stall`` (seconds
    to wait before the first answer), ``ignore_range``, ``corrupt`` (flip one byte of the
    body), ``goog_md5`` (send Cloud Storage's ``x-goog-hash`` with the true file's md5).
    ``requests`` records (method, path, headers) of every request.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_after: int | None = None
        self.cut_every = False
        self.fail_times = 0
        self.stall = 0.0
        self.ignore_range = False
        self.corrupt = False
        self.goog_md5 = False
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        handler = _handler_for(self)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def gets(self) -> list[dict[str, str]]:
        return [headers for method, _, headers in self.requests if method == "GET"]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    """Serves ``local``'s files, with the faults it is set to inject."""

    protocol_version = "HTTP/1.1"
    local: LocalServer  # set by _handler_for

    def log_message(self, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        self.local.requests.append((self.command, self.path, dict(self.headers)))
        if self.local.stall:
            pause, self.local.stall = self.local.stall, 0.0
            time.sleep(pause)
        data = self.local.files.get(self.path)
        if self.local.fail_times > 0 or data is None:
            self.local.fail_times = max(self.local.fail_times - 1, 0)
            self.send_error(500 if data is not None else 404)
            return
        start = self._range_start(data)
        if start is None:
            return
        self._headers(data, start)
        if body:
            self._body(data, start)

    def _range_start(self, data: bytes) -> int | None:
        """Where the body starts (0: whole file); None when a 416 was sent."""
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if not rng or self.local.ignore_range or (if_range and if_range != etag_of(data)):
            self.send_response(200)
            return 0
        start = int(rng.split("=")[1].split("-")[0])
        if start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        return start

    def _headers(self, data: bytes, start: int) -> None:
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", etag_of(data))
        if self.local.goog_md5:
            md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
            self.send_header("x-goog-hash", f"crc32c=AAAAAA==,md5={md5}")
        self.end_headers()

    def _body(self, data: bytes, start: int) -> None:
        body = data[start:]
        if self.local.corrupt:
            body = bytes([body[0] ^ 1]) + body[1:]
        if self.local.cut_after is not None:
            body = body[: self.local.cut_after]
            if not self.local.cut_every:
                self.local.cut_after = None
            self.close_connection = True
        self.wfile.write(body)
        self.wfile.flush()


def _handler_for(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"local": server})


@pytest.fixture
def server():
    s = LocalServer()
    yield s
    s.close()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_full_download_is_verified_and_atomic(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    got = download(f"{server.url}/f.bin", tmp_path / "f.bin", Expected(sha256=SHA), FAST)
    url = f"{server.url}/f.bin"
    assert got == Downloaded(tmp_path / "f.bin", url, len(PAYLOAD), SHA, checked=("size", "sha256"))
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["f.bin"]  # no .part, no .part.json
    again = download(f"{server.url}/f.bin", tmp_path / "f.bin", Expected(sha256=SHA), FAST)
    assert again.skipped and again.sha256 == SHA
    assert len(server.requests) == 1  # the known sha256 is checked locally: no request


def test_a_download_cut_half_way_resumes_with_range(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.cut_after = len(PAYLOAD) // 2
    download(f"{server.url}/f.bin", tmp_path / "f.bin", retry=FAST)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    first, second = server.gets()
    assert "Range" not in first
    assert second["Range"] == f"bytes={len(PAYLOAD) // 2}-"
    assert second["If-Range"] == etag_of(PAYLOAD)


def test_tries_that_bring_bytes_do_not_use_up_the_retries(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.cut_after, server.cut_every = len(PAYLOAD) // 5 + 1, True
    patient_once = RetryPolicy(attempts=1, base_delay=0.01, timeout=5)
    download(f"{server.url}/f.bin", tmp_path / "f.bin", Expected(sha256=SHA), patient_once)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    starts = [h.get("Range", "bytes=0-") for h in server.gets()]
    step = len(PAYLOAD) // 5 + 1
    assert starts == [f"bytes={k * step}-" for k in range(5)]


def test_a_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:1000])
    download(f"{server.url}/f.bin", tmp_path / "f.bin", Expected(sha256=SHA), FAST)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert server.gets()[0]["Range"] == "bytes=1000-"


def test_a_partial_file_from_another_url_is_not_resumed(server, tmp_path):
    server.files["/raw/cat.ndjson"] = PAYLOAD
    (tmp_path / "cat.ndjson.part").write_bytes(b"simplified strokes " * 50)
    (tmp_path / "cat.ndjson.part.json").write_text(
        json.dumps({"url": f"{server.url}/simplified/cat.ndjson", "validator": None})
    )
    download(f"{server.url}/raw/cat.ndjson", tmp_path / "cat.ndjson", retry=FAST)
    assert (tmp_path / "cat.ndjson").read_bytes() == PAYLOAD
    assert "Range" not in server.gets()[0]


def test_a_file_changed_on_the_server_starts_over_through_if_range(server, tmp_path):
    old, new = PAYLOAD, PAYLOAD[::-1]
    server.files["/f.bin"] = new
    (tmp_path / "f.bin.part").write_bytes(old[:1000])
    (tmp_path / "f.bin.part.json").write_text(
        json.dumps({"url": f"{server.url}/f.bin", "validator": etag_of(old)})
    )
    download(f"{server.url}/f.bin", tmp_path / "f.bin", retry=FAST)
    assert (tmp_path / "f.bin").read_bytes() == new
    assert server.gets()[0]["If-Range"] == etag_of(old)


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.ignore_range = True
    (tmp_path / "f.bin.part").write_bytes(b"garbage" * 10)
    download(f"{server.url}/f.bin", tmp_path / "f.bin", retry=FAST)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert server.gets()[0]["Range"] == "bytes=70-"


def test_a_complete_part_file_is_finished_on_416(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD)
    got = download(f"{server.url}/f.bin", tmp_path / "f.bin", Expected(sha256=SHA), FAST)
    assert got.sha256 == SHA and (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert len(server.gets()) == 1  # the 416 said it is complete: no body fetched


def test_a_part_file_longer_than_the_file_starts_over_on_416(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD + b"extra")
    download(f"{server.url}/f.bin", tmp_path / "f.bin", retry=FAST)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert [h.get("Range") for h in server.gets()] == [f"bytes={len(PAYLOAD) + 5}-", None]


def test_server_errors_are_retried(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.fail_times = 2
    download(f"{server.url}/f.bin", tmp_path / "f.bin", retry=FAST)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD and len(server.gets()) == 3


def test_persistent_server_errors_give_up_with_the_url(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.fail_times = 100
    with pytest.raises(DownloadError, match=r"/f\.bin: HTTP 500 .*gave up after 3 tries"):
        download(f"{server.url}/f.bin", tmp_path / "f.bin", retry=FAST)
    assert len(server.gets()) == FAST.attempts and leftovers(tmp_path) == []


def test_a_stalled_server_times_out_and_is_retried(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.stall = 1.0
    quick = RetryPolicy(attempts=2, base_delay=0.01, timeout=0.3)
    download(f"{server.url}/f.bin", tmp_path / "f.bin", Expected(sha256=SHA), quick)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD and len(server.gets()) == 2


def test_checksum_mismatch_leaves_no_file(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.corrupt = True
    with pytest.raises(DownloadError, match=r"/f\.bin: sha256 mismatch"):
        download(f"{server.url}/f.bin", tmp_path / "f.bin", Expected(sha256=SHA), FAST)
    assert leftovers(tmp_path) == []
    assert len(server.gets()) == 1  # a fresh download that fails its checksum is not retried


def test_a_resumed_file_that_fails_its_checksum_is_downloaded_again(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    (tmp_path / "f.bin.part").write_bytes(b"\xff" * 1000)  # not the file's first 1000 bytes
    download(f"{server.url}/f.bin", tmp_path / "f.bin", Expected(sha256=SHA), FAST)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert [h.get("Range") for h in server.gets()] == ["bytes=1000-", None]


def test_cloud_storage_md5_is_checked(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.goog_md5 = server.corrupt = True
    with pytest.raises(DownloadError, match="md5 mismatch"):
        download(f"{server.url}/f.bin", tmp_path / "f.bin", retry=FAST)
    assert leftovers(tmp_path) == []
    server.corrupt = False
    download(f"{server.url}/f.bin", tmp_path / "f.bin", retry=FAST)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_an_existing_file_is_checked_against_the_server(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.goog_md5 = True
    (tmp_path / "f.bin").write_bytes(PAYLOAD)
    got = download(f"{server.url}/f.bin", tmp_path / "f.bin", retry=FAST)
    assert got.skipped and got.sha256 == SHA
    assert [method for method, _, _ in server.requests] == ["HEAD"]
    (tmp_path / "f.bin").write_bytes(PAYLOAD[::-1])  # same size, other content: md5 differs
    got = download(f"{server.url}/f.bin", tmp_path / "f.bin", retry=FAST)
    assert not got.skipped and (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_missing_file_is_a_clear_error(server, tmp_path):
    with pytest.raises(DownloadError, match=r"/nope: HTTP 404"):
        download(f"{server.url}/nope", tmp_path / "x", retry=FAST)
    assert len(server.gets()) == 1  # a 404 is not retried


def test_mirrors_are_tried_in_order(server, tmp_path):
    server.files["/good/f.bin"] = PAYLOAD
    urls = [f"{server.url}/bad/f.bin", f"{server.url}/good/f.bin"]
    got = download(urls, tmp_path / "f.bin", Expected(sha256=SHA), FAST)
    assert got.url == urls[1] and (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_an_unreachable_server_gives_up_with_the_url(tmp_path):
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=rf"127\.0\.0\.1:{port}/f: cannot connect"):
        download(f"http://127.0.0.1:{port}/f", tmp_path / "f", retry=FAST)
    assert leftovers(tmp_path) == []


def test_the_progress_bar_counts_bytes_from_the_resume_point(server, tmp_path, monkeypatch):
    bars: list[dict[str, Any]] = []
    real_progress = dl.progress

    def recording_progress(**kwargs: Any) -> Any:
        bars.append(kwargs)
        return real_progress(**kwargs, disable=True)

    monkeypatch.setattr(dl, "progress", recording_progress)
    server.files["/f.bin"] = PAYLOAD
    server.cut_after = 30000
    download(f"{server.url}/f.bin", tmp_path / "f.bin", retry=FAST, desc="f.bin")
    assert [(b["total"], b["initial"], b["unit"]) for b in bars] == [
        (len(PAYLOAD), 0, "B"),
        (len(PAYLOAD), 30000, "B"),
    ]


def test_backoff_doubles_up_to_the_cap():
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0)
    assert [policy.delay(k) for k in range(6)] == [0.5, 0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ConfigError, match="at least 1"):
        RetryPolicy(attempts=0)
