"""The API with a real bundle, a real SQLite file and FastAPI's in-process client."""

from __future__ import annotations

import base64
import io
import json
import sqlite3

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imgclass.serve.app import create_app
from imgclass.serve.settings import ServeSettings


@pytest.fixture
def client(digits_bundle, tmp_path):
    settings = ServeSettings(
        models=[str(digits_bundle)],
        feedback_db=tmp_path / "fb.sqlite3",
        admin_token="s3cret",
        max_body_bytes=200_000,
        max_image_pixels=1_000_000,
    )
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def digit(shared_data):
    m = np.load(shared_data / "mnist.npz")
    return m["x_test"][3], str(m["y_test"][3])


def png(array, size=280, invert=True):
    img = Image.fromarray(255 - array if invert else array).resize((size, size))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_health_ready_models_and_page(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["ready"] is True
    models = client.get("/v1/models").json()["models"]
    assert models[0]["model"] == "cnn-small" and models[0]["classes"] == [str(d) for d in range(10)]
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert "paths" in client.get("/openapi.json").json()


def test_predict_multipart_base64_and_strokes(client, digit):
    image, label = digit
    r = client.post("/v1/predict?top_k=3", files={"file": ("d.png", png(image), "image/png")})
    assert r.status_code == 200
    body = r.json()
    assert body["predictions"][0]["label"] == label and len(body["predictions"]) == 3
    assert sum(p["probability"] for p in body["predictions"]) <= 1.0 + 1e-6
    assert {"preprocess", "model", "total"} <= set(body["timing_ms"])
    data_url = "data:image/png;base64," + base64.b64encode(png(image)).decode()
    r2 = client.post("/v1/predict", json={"image_base64": data_url})
    assert r2.json()["predictions"][0] == body["predictions"][0]
    strokes = [
        [[10, 60, 60], [10, 10, 120]],
        [[30, 90], [60, 60]],
    ]  # a "7"-ish shape in canvas pixels
    r3 = client.post("/v1/predict", json={"strokes": strokes})
    assert r3.status_code == 200 and len(r3.json()["predictions"]) == 3


def test_batch(client, digit):
    item = {"image_base64": base64.b64encode(png(digit[0])).decode()}
    r = client.post("/v1/predict/batch", json={"items": [item, item]})
    assert r.status_code == 200 and len(r.json()["results"]) == 2
    r = client.post("/v1/predict/batch", json={"items": [item] * 40})
    assert r.status_code == 413


@pytest.mark.parametrize(
    ("kwargs", "status", "detail"),
    [
        (
            {"content": b"not json", "headers": {"Content-Type": "application/json"}},
            422,
            "not valid JSON",
        ),
        ({"json": {"strokes": [[[1, 2], [3]]]}}, 422, "strokes[0]: x, y"),
        ({"json": {"strokes": [[["a"], [1]]]}}, 422, "strokes[0][0][0]: must be a number"),
        ({"json": {}}, 422, "exactly one of"),
        ({"json": {"image_base64": "%%%"}}, 422, "not valid base64"),
        (
            {"json": {"image_base64": base64.b64encode(b"GIF89a broken").decode()}},
            415,
            "not an image we can read",
        ),
        ({"files": {"file": ("x.txt", b"hello", "text/plain")}}, 415, "not an image we can read"),
        ({"files": {"other": ("x.png", b"x", "image/png")}}, 422, "field 'file'"),
        (
            {"content": b"x" * 300_000, "headers": {"Content-Type": "application/json"}},
            413,
            "larger than",
        ),
        ({"content": b"abc", "headers": {"Content-Type": "text/plain"}}, 415, "multipart"),
    ],
)
def test_bad_inputs_get_clear_4xx(client, kwargs, status, detail):
    r = client.post("/v1/predict", **kwargs)
    assert r.status_code == status
    assert detail in r.json()["detail"]


def test_decompression_bombs_and_unknown_models(client):
    buf = io.BytesIO()
    Image.new("L", (2000, 2000)).save(buf, "PNG")  # 4 MP, tiny file, over the 1 MP limit
    r = client.post("/v1/predict", files={"file": ("big.png", buf.getvalue(), "image/png")})
    assert r.status_code == 413 and "at most 1000000 pixels" in r.json()["detail"]
    r = client.post("/v1/predict?model=nope", json={"strokes": [[[1], [1]]]})
    assert r.status_code == 404
    assert client.post("/v1/predict?top_k=0", json={"strokes": [[[1], [1]]]}).status_code == 422


def test_feedback_is_stored_once_and_listed_for_admins(client, digit, tmp_path):
    body = {
        "input": {"strokes": [[[1, 5], [1, 5]]]},
        "label": "7",
        "predicted": [{"label": "1", "probability": 0.9}],
    }
    first = client.post("/v1/feedback", json=body).json()
    again = client.post("/v1/feedback", json=body).json()
    assert first["duplicate"] is False and again == {"id": first["id"], "duplicate": True}
    image = {"input": {"image_base64": base64.b64encode(png(digit[0])).decode()}, "label": digit[1]}
    assert client.post("/v1/feedback", json=image).json()["duplicate"] is False
    assert client.post("/v1/feedback", json={**body, "label": "cat"}).status_code == 422
    with sqlite3.connect(tmp_path / "fb.sqlite3") as db:
        rows = db.execute(
            "SELECT label, input_kind, status, length(image) FROM feedback ORDER BY id"
        ).fetchall()
    assert rows[0][:3] == ("7", "strokes", "new") and rows[1][1] == "image" and rows[1][3] > 0
    assert len(rows) == 2
    assert client.get("/v1/feedback").status_code == 401
    assert client.get("/v1/feedback", headers={"Authorization": "Bearer wrong"}).status_code == 401
    listed = client.get("/v1/feedback", headers={"Authorization": "Bearer s3cret"}).json()["items"]
    assert [i["label"] for i in listed] == [digit[1], "7"]


def test_metrics_count_requests(client):
    client.get("/healthz")
    client.post("/v1/predict", json={})
    text = client.get("/metrics").text
    assert 'imgclass_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'route="/v1/predict",status="422"' in text


def test_serve_command_refuses_a_missing_bundle(tmp_path, capsys):
    from imgclass.cli import main

    assert main(["serve", "--model", str(tmp_path / "nope")]) == 2
    assert "not a complete bundle" in capsys.readouterr().err


def test_settings_come_from_the_environment(monkeypatch, digits_bundle):
    monkeypatch.setenv("IMGCLASS_MODELS", json.dumps([str(digits_bundle)]))
    monkeypatch.setenv("IMGCLASS_MAX_BATCH", "4")
    settings = ServeSettings()
    assert settings.models == [str(digits_bundle)] and settings.max_batch == 4


def test_explore_and_report_use_the_models_own_test_split(client):
    report = client.get("/v1/models/run/report").json()
    assert report["split"] == "test" and report["n"] == 500
    cm = np.array(report["confusion"])
    assert cm.shape == (10, 10) and cm.sum() == 500
    assert report["accuracy"] == pytest.approx(np.trace(cm) / 500)
    example = client.get("/v1/models/run/examples/random?seed=3").json()
    assert example["label"] in [str(d) for d in range(10)] and len(example["predictions"]) == 2
    assert example["image"].startswith("data:image/png;base64,")
    true, pred = np.unravel_index(
        np.argmax(cm - np.diag(np.diag(cm)) if (cm - np.diag(np.diag(cm))).any() else cm), cm.shape
    )
    cell = client.get(f"/v1/models/run/confusion?true={true}&predicted={pred}&limit=5").json()[
        "examples"
    ]
    assert 0 < len(cell) <= min(5, cm[true, pred])
    assert all(e["label"] == str(true) and e["predictions"][0]["label"] == str(pred) for e in cell)
    assert client.get("/v1/models/run/confusion?true=x&predicted=1").status_code == 404
    assert client.get("/v1/models/nope/report").status_code == 404


def test_include_input_returns_the_models_input(client, digit, digits_bundle, shared_data):
    """The returned input is, byte for byte, what the Python renderer and the bundle's
    recipe make of the same strokes (or photo): the server draws what training drew."""
    import gzip

    from imgclass.data.preprocess import apply_recipe, prepare_raw_image
    from imgclass.data.render import render_strokes, simplify_raw

    recipe = json.loads((digits_bundle / "preprocess.json").read_text())["recipe"]
    with gzip.open(shared_data / "quickdraw_strokes_raw.ndjson.gz", "rt") as f:
        strokes = json.loads(next(f))["drawing"]  # a real canvas drawing: [x], [y], [t ms]
    r = client.post("/v1/predict?include_input=true", json={"strokes": strokes})
    assert r.status_code == 200
    picture = np.array(r.json()["input"], dtype=np.uint8)
    drawing = [np.asarray(s, dtype=np.float32).T for s in strokes]
    expected = apply_recipe(recipe, render_strokes(simplify_raw(drawing), size=28)[None])[0]
    assert picture.shape == (28, 28) and picture.max() > 200
    np.testing.assert_array_equal(picture, expected)

    data = png(digit[0])
    r = client.post("/v1/predict?include_input=true", files={"file": ("d.png", data, "image/png")})
    picture = np.array(r.json()["input"], dtype=np.uint8)
    image = Image.open(io.BytesIO(data))
    expected = apply_recipe(recipe, [prepare_raw_image(image, recipe)])[0]
    np.testing.assert_array_equal(picture, expected)
