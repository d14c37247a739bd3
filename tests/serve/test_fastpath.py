"""``POST /v1/predict``'s fast path answers exactly as the FastAPI route does.

Every request is sent twice to one real app: as it is (the fast path takes it) and with
an extra query parameter that FastAPI ignores but the fast path does not take (so the
FastAPI route answers). Status, body (less the timings), content type and security
headers must be the same.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imgclass.serve.app import create_app
from imgclass.serve.fastpath import PredictFastPath, predict_route, simple_query
from imgclass.serve.routes import predict
from imgclass.serve.settings import ServeSettings
from imgclass.serve.state import State


@pytest.fixture(scope="module")
def settings(digits_bundle, tmp_path_factory):
    return ServeSettings(
        models=[str(digits_bundle)],
        feedback_db=tmp_path_factory.mktemp("fast") / "fb.sqlite3",
        max_body_bytes=200_000,
        max_image_pixels=1_000_000,
    )


@pytest.fixture(scope="module")
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


def png_bytes(size: int = 280, mode: str = "L") -> bytes:
    canvas = np.full((size, size), 255, np.uint8)
    canvas[60:220, 130:150] = 0  # a "1"
    buf = io.BytesIO()
    Image.fromarray(canvas).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def big_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (2000, 2000)).save(buf, "PNG")  # over the 1 MP limit
    return buf.getvalue()


STROKES = {"strokes": [[[10, 60, 60], [10, 10, 120]], [[30, 90], [60, 60]]]}
REQUESTS = {
    "png": ("", {"files": {"file": ("d.png", png_bytes(), "image/png")}}),
    "rgba png, top 5": ("top_k=5", {"files": {"file": ("d.png", png_bytes(mode="RGBA"))}}),
    "base64": ("", {"json": {"image_base64": base64.b64encode(png_bytes()).decode()}}),
    "strokes with input": ("include_input=true&top_k=2", {"json": STROKES}),
    "strokes, model named": ("model=run", {"json": STROKES}),
    "unknown model": ("model=nope", {"json": STROKES}),
    "top_k above max_top_k": ("top_k=100", {"json": STROKES}),
    "both inputs": ("", {"json": {**STROKES, "image_base64": "AAAA"}}),
    "not an object": ("", {"json": [1, 2]}),
    "deep nesting": ("", {"content": b"[" * 5000, "headers": {"Content-Type": "application/json"}}),
    "big integer": ("", {"json": {"strokes": [[[10**400], [1]]]}}),
    "bad strokes": ("", {"json": {"strokes": [[[[1, 2]], [[3, 4]]]]}}),
    "text/plain": ("", {"content": b"abc", "headers": {"Content-Type": "text/plain"}}),
    "no content type": ("", {"content": b"abc"}),
    "no file field": ("", {"files": {"other": ("x.png", b"x", "image/png")}}),
    "not an image": ("", {"files": {"file": ("x.txt", b"hello", "text/plain")}}),
    "too many pixels": ("", {"files": {"file": ("b.png", big_png(), "image/png")}}),
    "body too large": (
        "",
        {"content": b"x" * 300_000, "headers": {"Content-Type": "application/json"}},
    ),
    "no boundary": ("", {"content": b"--x", "headers": {"Content-Type": "multipart/form-data"}}),
}


def comparable(response) -> tuple:
    body = response.json()
    if isinstance(body, dict):
        body.pop("timing_ms", None)
    headers = {
        k: response.headers.get(k)
        for k in (
            "content-type",
            "content-security-policy",
            "x-content-type-options",
            "x-frame-options",
            "referrer-policy",
            "retry-after",
        )
    }
    return response.status_code, body, headers


@pytest.mark.parametrize("name", list(REQUESTS))
def test_the_fast_path_answers_as_the_fastapi_route(client, name):
    query, kwargs = REQUESTS[name]
    fast = client.post(f"/v1/predict?{query}", **kwargs)
    routed = client.post(f"/v1/predict?{query}{'&' if query else ''}via=fastapi", **kwargs)
    assert comparable(fast) == comparable(routed)
    assert fast.status_code != 500


def test_requests_are_counted_under_the_route(client):
    def count() -> float:
        line = 'imgclass_requests_total{method="POST",route="/v1/predict",status="200"} '
        for row in client.get("/metrics").text.splitlines():
            if row.startswith(line):
                return float(row.removeprefix(line))
        return 0.0

    before = count()
    assert client.post("/v1/predict", json=STROKES).status_code == 200
    assert count() == before + 1


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"", {"top_k": 3, "model": None, "include_input": False}),
        (b"top_k=7&model=m-int8", {"top_k": 7, "model": "m-int8", "include_input": False}),
        (b"include_input=1&top_k=100", {"top_k": 100, "model": None, "include_input": True}),
    ],
)
def test_simple_queries_are_read(query, expected):
    assert simple_query(query) == expected


@pytest.mark.parametrize(
    "query",
    [
        b"top_k=0",
        b"top_k=101",
        b"top_k=-1",
        b"top_k=3.0",
        b"top_k=",
        b"top_k=1&top_k=2",
        b"include_input=yes",
        b"model=a%20b",
        b"model=a+b",
        b"other=1",
        b"top_k",
        "model=é".encode(),
    ],
)
def test_anything_else_is_left_to_fastapi(query):
    assert simple_query(query) is None


def test_the_fast_path_answers_without_the_app(settings):
    """A plain request never reaches the app behind the fast path (here one that fails)."""

    async def app_not_expected(scope, receive, send):
        raise AssertionError(f"{scope['path']} reached the app")

    state = State(settings)
    fast = PredictFastPath(app_not_expected, state, predict_route(predict.router.routes))
    body = json.dumps(STROKES).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/predict",
        "root_path": "",
        "query_string": b"top_k=2",
        "headers": [(b"content-type", b"application/json")],
    }
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    try:
        asyncio.run(fast(scope, receive, send))
    finally:
        state.work.shutdown()
        state.feedback.close()
    assert sent[0]["status"] == 200
    assert len(json.loads(sent[1]["body"])["predictions"]) == 2
    assert scope["route"].path == "/v1/predict"
