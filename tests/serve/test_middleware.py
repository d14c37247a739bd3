"""The limits-and-metrics ASGI middleware: refusals before any route reads a body, and
every request counted by route and status (including refusals and server errors)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from imgclass.serve.app import create_app
from imgclass.serve.settings import ServeSettings


@pytest.fixture
def client(digits_bundle, tmp_path):
    settings = ServeSettings(
        models=[str(digits_bundle)], feedback_db=tmp_path / "fb.sqlite3", max_body_bytes=1000
    )
    app = create_app(settings)

    @app.get("/boom", include_in_schema=False)
    def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_oversized_and_unreadable_lengths_are_refused(client):
    r = client.post("/v1/predict", content=b"x" * 1001, headers={"content-type": "image/png"})
    assert r.status_code == 413 and r.json() == {"detail": "request body larger than 1000 bytes"}
    r = client.post("/v1/predict", content=b"x", headers={"content-length": "abc"})
    assert r.status_code == 413


def test_chunked_bodies_are_refused(client):
    def body():
        yield b'{"strokes": '
        yield b"[]}"

    r = client.post("/v1/predict", content=body(), headers={"content-type": "application/json"})
    assert r.status_code == 411 and "Content-Length" in r.json()["detail"]


def test_every_outcome_is_counted_by_route_and_status(client):
    client.post("/v1/predict", content=b"x" * 1001)
    assert client.get("/boom").status_code == 500
    client.get("/no-such-page")
    text = client.get("/metrics").text
    assert 'route="unmatched",status="413"' in text
    assert 'method="GET",route="/boom",status="500"' in text
    assert 'method="GET",route="unmatched",status="404"' in text
