"""One path from a raw input to the model's input (``Bundle.model_input``): the same raw
inputs (a canvas PNG, JPEG photos, raw and simplified Quick, Draw! strokes) give
byte-identical model inputs through the server, the ``predict`` command, the feedback
export (which retraining reads) and the bundle itself."""

from __future__ import annotations

import base64
import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from imgclass.bundle import load_bundle, save_bundle
from imgclass.cli import main
from imgclass.cli.predict import Outcome, read_inputs
from imgclass.data.preprocess import get_recipe
from imgclass.data.render import simplify_raw
from imgclass.data.store import PreparedDataset
from imgclass.feedback.dataset_export import export_feedback
from imgclass.feedback.store import FeedbackStore
from imgclass.serve.app import create_app
from imgclass.serve.settings import ServeSettings
from onnx_support import linear_onnx

LABELS = ["cat", "dog", "sun", "owl"]


@pytest.fixture(scope="module", params=["sketch", "mnist"])
def bundle_path(request, tmp_path_factory) -> Path:
    """A real gray 28x28 bundle (loadable, servable) with a real recipe."""
    recipe = get_recipe(request.param)
    side = recipe["size"][0]
    spec = {
        "kind": "image",
        "layout": "nchw",
        "channels": 1,
        "size": [side, side],
        "scale": 1 / 255,
    }
    model_json = {"name": "linear", "family": "cnn", "framework": "torch", "input_kind": "image"}
    return save_bundle(
        tmp_path_factory.mktemp("bundles") / request.param,
        linear_onnx(side, len(LABELS)),
        LABELS,
        {"recipe": recipe, "input": spec},
        {"test": {"accuracy": 0.1, "n": 1}},
        model_json,
    )


@pytest.fixture(scope="module")
def raw_inputs(shared_data, tmp_path_factory) -> dict[str, dict]:
    """name -> {"file": a file the CLI reads, "json": what the API takes, and "image"
    bytes or "strokes"}: a canvas PNG, a small and a large JPEG photo, raw strokes (with
    time) and simplified ones, all from the real data."""
    folder = tmp_path_factory.mktemp("raw")
    with gzip.open(shared_data / "quickdraw_strokes_raw.ndjson.gz", "rt") as f:
        rows = [json.loads(next(f)) for _ in range(3)]
    raw = rows[0]["drawing"]
    drawing = [np.asarray(s, dtype=np.float32).T for s in rows[1]["drawing"]]
    simple = [[[int(v) for v in s[:, 0]], [int(v) for v in s[:, 1]]] for s in simplify_raw(drawing)]
    photo_path = sorted((shared_data / "photos" / "cats_vs_dogs" / "cat").glob("*.jpg"))[0]
    photo = Image.open(photo_path).convert("RGB")
    big = io.BytesIO()  # shorter side past 2 * 1024: the server decodes it reduced
    photo.resize((2600, 2100)).save(big, format="JPEG", quality=90)
    images = {
        "canvas.png": canvas_png(rows[2]["drawing"]),
        "photo.jpg": photo_path.read_bytes(),
        "big.jpg": big.getvalue(),
    }
    out: dict[str, dict] = {}
    for name, data in images.items():
        (folder / name).write_bytes(data)
        body = {"image_base64": base64.b64encode(data).decode()}
        out[name] = {"file": folder / name, "image": data, "json": body}
    for name, strokes in (("raw.ndjson", raw), ("simplified.ndjson", simple)):
        (folder / name).write_text(json.dumps({"word": "cat", "drawing": strokes}) + "\n")
        out[name] = {"file": folder / name, "strokes": strokes, "json": {"strokes": strokes}}
    return out


def canvas_png(strokes: list) -> bytes:
    """A real drawing as the page's canvas exports it: black lines on a transparent 600x450
    PNG, in the canvas's own coordinates."""
    img = Image.new("RGBA", (600, 450), (0, 0, 0, 0))
    pen = ImageDraw.Draw(img)
    for s in strokes:
        pen.line(list(zip(s[0], s[1], strict=True)), fill=(0, 0, 0, 255), width=8, joint="curve")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def through_bundle(bundle_path: Path, inputs: dict[str, dict]) -> dict[str, np.ndarray]:
    bundle = load_bundle(bundle_path)
    out = {}
    for name, given in inputs.items():
        if "image" in given:
            item = bundle.decode(given["image"], 25_000_000)
        else:
            item = [np.asarray(s, dtype=np.float32).T for s in given["strokes"]]
        out[name] = bundle.model_input([item])[0]
    return out


def through_server(bundle_path: Path, inputs: dict[str, dict], tmp_path: Path) -> dict:
    """What the running app fed its model (``include_input``), multipart for files."""
    settings = ServeSettings(models=[str(bundle_path)], feedback_db=tmp_path / "s.sqlite3")
    out = {}
    with TestClient(create_app(settings)) as client:
        for name, given in inputs.items():
            for request in requests_for(name, given):
                r = client.post("/v1/predict?include_input=true", **request)
                assert r.status_code == 200, r.text
                got = np.array(r.json()["input"], dtype=np.uint8)
                if name in out:  # multipart and base64 must agree too
                    np.testing.assert_array_equal(got, out[name], err_msg=name)
                out[name] = got
    return out


def requests_for(name: str, given: dict) -> list[dict]:
    if "image" in given:
        return [{"files": {"file": (name, given["image"])}}, {"json": given["json"]}]
    return [{"json": given["json"]}]


def through_cli(bundle_path: Path, inputs: dict[str, dict]) -> dict[str, np.ndarray]:
    """What ``imgclass predict`` reads from the files, made into model inputs."""
    bundle = load_bundle(bundle_path)
    outcome = Outcome()
    items = read_inputs([str(g["file"]) for g in inputs.values()], outcome, bundle)
    assert not outcome.errors and len(items) == len(inputs)
    out = {}
    for name, item in zip(inputs, items, strict=True):
        raw = not item.simplified if isinstance(item.value, list) else None
        out[name] = bundle.model_input([item.value], raw=raw)[0]
    return out


def through_export(bundle_path: Path, inputs: dict[str, dict], tmp_path: Path) -> dict:
    """The feedback export (what retraining trains on) of each input, sent as feedback."""
    store = FeedbackStore.from_path_or_url(tmp_path / "fb.sqlite3")
    try:
        for given in inputs.values():
            strokes, image = given.get("strokes"), given.get("image")
            kind = "strokes" if strokes else "image"
            store.add(label="cat", input_kind=kind, strokes=strokes, image=image)
        store.set_status(range(1, len(inputs) + 1), "accepted")
        out = export_feedback(store, tmp_path / "export", bundle=bundle_path, test_fraction=0)
    finally:
        store.close()
    ds = PreparedDataset.open(out)
    images, _ = ds.load("train")
    ids = ds.manifest["feedback"]["ids"]["train"]
    ds.close()
    names = list(inputs)
    return {names[fid - 1]: images[i] for i, fid in enumerate(ids)}


def test_every_caller_feeds_the_model_the_same_bytes(bundle_path, raw_inputs, tmp_path):
    expected = through_bundle(bundle_path, raw_inputs)
    callers = {
        "server": through_server(bundle_path, raw_inputs, tmp_path),
        "cli": through_cli(bundle_path, raw_inputs),
        "export": through_export(bundle_path, raw_inputs, tmp_path),
    }
    for caller, got in callers.items():
        assert sorted(got) == sorted(expected), caller
        for name, x in expected.items():
            assert x.dtype == np.uint8 and x.shape == (28, 28) and x.max() > 0, name
            assert got[name].dtype == np.uint8, (caller, name)
            np.testing.assert_array_equal(got[name], x, err_msg=f"{caller}: {name}")


def test_the_predict_command_scores_exactly_those_inputs(bundle_path, raw_inputs, capsys):
    """End to end: ``imgclass predict --json`` gives the probabilities of the inputs
    ``Bundle.model_input`` makes (so the command cannot feed anything else)."""
    bundle = load_bundle(bundle_path)
    expected = through_bundle(bundle_path, raw_inputs)
    files = [str(g["file"]) for g in raw_inputs.values()]
    assert main(["predict", str(bundle_path), *files, "--json", "--top-k", "4"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert len(results) == len(raw_inputs)
    for name, result in zip(raw_inputs, results, strict=True):
        proba = bundle.predict_proba(expected[name][None])[0]
        got = {p["label"]: p["probability"] for p in result["predictions"]}
        want = {label: float(proba[i]) for i, label in enumerate(LABELS)}
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[k] for k in LABELS], [want[k] for k in LABELS], rtol=1e-6)


def test_simplified_strokes_are_not_simplified_again(bundle_path, raw_inputs):
    """Strokes in Quick, Draw!'s simplified form are drawn as ``data prepare`` draws
    them (simplifying twice moves points), whoever receives them."""
    bundle = load_bundle(bundle_path)
    strokes = raw_inputs["simplified.ndjson"]["strokes"]
    drawing = [np.asarray(s, dtype=np.float32).T for s in strokes]
    as_is = bundle.model_input([drawing], raw=False)
    np.testing.assert_array_equal(bundle.model_input([drawing]), as_is)
    assert not np.array_equal(bundle.model_input([drawing], raw=True), as_is)
