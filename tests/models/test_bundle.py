"""The bundle: files and their contents, verification, and inference through ONNX Runtime
matching the framework for image (nchw and flat) and sequence models."""

from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import pytest
import torch

from imgclass.bundle import FILES, load_bundle, save_bundle
from imgclass.errors import ModelError
from imgclass.models import create_model
from imgclass.onnx_export import export_sklearn, export_torch, export_torch_sequence

torch.set_num_threads(1)
RECIPE = {"name": "mnist", "steps": [], "size": [28, 28], "channels": 1}
IMAGE_INPUT = {"kind": "image", "layout": "nchw", "channels": 1, "size": [28, 28], "scale": 1 / 255}
LABELS = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def digits(shared_data):
    m = np.load(shared_data / "mnist.npz")
    return m["x_test"][:64], m["y_test"][:64].astype(np.int64)


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return create_model("cnn-small", 10).eval()


def write(tmp_path, model, sample, input_spec=IMAGE_INPUT, recipe=RECIPE, name="cnn-small"):
    onnx_bytes = export_torch(model, sample)
    metrics = {"test": {"accuracy": 0.5, "top3_accuracy": 0.75, "n": 64}, "history": []}
    model_json = {"name": name, "family": "cnn", "framework": "torch", "input_kind": "image"}
    preprocess = {"recipe": recipe, "input": input_spec}
    return save_bundle(tmp_path / "bundle", onnx_bytes, LABELS, preprocess, metrics, model_json)


def test_round_trip_keeps_every_part(tmp_path, cnn, digits):
    path = write(tmp_path, cnn, digits[0][:1, None] / np.float32(255))
    assert sorted(p.name for p in path.iterdir()) == sorted(FILES)  # no partial folder left
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    bundle = load_bundle(path)
    assert bundle.labels == LABELS and bundle.recipe == RECIPE and bundle.input_kind == "image"
    assert bundle.metrics["test"]["accuracy"] == 0.5
    info = json.loads((path / "model.json").read_text())
    assert info["model_sha256"] == hashlib.sha256((path / "model.onnx").read_bytes()).hexdigest()
    assert {"imgclass", "torch", "onnxruntime", "onnx"} <= set(info["versions"])
    assert info["name"] == "cnn-small" and info["created"].endswith("Z")
    card = (path / "card.md").read_text()
    assert "cnn-small" in card and "0.5000" in card and "0, 1, 2" in card


def test_predict_proba_on_uint8_images_matches_torch(tmp_path, cnn, digits):
    x, _ = digits
    bundle = load_bundle(write(tmp_path, cnn, x[:1, None] / np.float32(255)))
    with torch.no_grad():
        expected = torch.softmax(cnn(torch.from_numpy(x[:, None] / np.float32(255))), 1).numpy()
    np.testing.assert_allclose(bundle.predict_proba(x), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        bundle.predict_proba(x[:, :, :, None]), expected, rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        bundle.predict_proba(x, batch_size=5), expected, rtol=1e-4, atol=1e-5
    )
    assert bundle.predict_proba(x[:0]).shape == (0, 10)
    with pytest.raises(ModelError, match=r"images of shape \(n, 28, 28\).*predict_raw"):
        bundle.predict_proba(np.zeros((2, 32, 32), np.uint8))


def test_flat_layout_serves_pca_svm(tmp_path, shared_data, digits):
    m = np.load(shared_data / "mnist.npz")
    x, y = m["x_train"][:300], m["y_train"][:300].astype(np.int64)
    model = create_model("pca-svm", 10, n_components=20).fit(x.reshape(300, -1) / 255.0, y)
    spec = {**IMAGE_INPUT, "layout": "flat"}
    preprocess = {"recipe": RECIPE, "input": spec}
    path = save_bundle(
        tmp_path / "b", export_sklearn(model, 784), LABELS, preprocess, {}, {"name": "pca-svm"}
    )
    test = digits[0]
    expected = model.predict_proba(test.reshape(len(test), -1).astype(np.float32) / 255)
    got = load_bundle(path).predict_proba(test)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_sequence_bundles_take_drawings(tmp_path, shared_data):
    from imgclass.data.sequences import encode_drawings

    with gzip.open(shared_data / "quickdraw_strokes_raw.ndjson.gz", "rt") as f:
        rows = [json.loads(next(f)) for _ in range(5)]
    drawings = [[np.asarray(s, dtype=np.float32).T for s in r["drawing"]] for r in rows]
    seqs, lengths = encode_drawings(drawings, "stroke5", 100, raw=True)
    torch.manual_seed(0)
    model = create_model("stroke-rnn", 10, hidden=16).eval()
    spec = {"kind": "sequence", "format": "stroke5", "max_len": 100}
    path = save_bundle(
        tmp_path / "s",
        export_torch_sequence(model, seqs, lengths),
        LABELS,
        {"recipe": RECIPE, "input": spec},
        {},
        {"name": "stroke-rnn"},
    )
    bundle = load_bundle(path)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(seqs), torch.from_numpy(lengths)), 1)
    np.testing.assert_allclose(bundle.predict_raw(drawings), expected.numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelError, match="reads strokes"):
        bundle.predict_raw([np.zeros((28, 28), np.uint8)])


def test_tampered_model_is_refused(tmp_path, cnn, digits):
    path = write(tmp_path, cnn, digits[0][:1, None] / np.float32(255))
    data = bytearray((path / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model.onnx does not match the sha256"):
        load_bundle(path)


@pytest.mark.parametrize("missing", ["model.onnx", "labels.json", "preprocess.json"])
def test_missing_files_are_named(tmp_path, cnn, digits, missing):
    path = write(tmp_path, cnn, digits[0][:1, None] / np.float32(255))
    (path / missing).unlink()
    with pytest.raises(ModelError, match=f"not a complete bundle: missing {missing}"):
        load_bundle(path)
    with pytest.raises(ModelError, match="not a complete bundle: no such folder"):
        load_bundle(tmp_path / "nowhere")


def test_inconsistent_bundles_are_refused(tmp_path, cnn, digits):
    sample = digits[0][:1, None] / np.float32(255)
    path = write(tmp_path, cnn, sample)
    (path / "labels.json").write_text(json.dumps(LABELS[:9]))
    with pytest.raises(ModelError, match="gives 10 probabilities but labels.json names 9"):
        load_bundle(path)
    (path / "preprocess.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"preprocess.json: cannot read it as JSON"):
        load_bundle(path)


def test_bad_parts_leave_nothing_behind(tmp_path, cnn, digits):
    onnx_bytes = export_torch(cnn, digits[0][:1, None] / np.float32(255))
    with pytest.raises(ModelError, match="labels must be unique"):
        save_bundle(
            tmp_path / "b", onnx_bytes, ["a", "a"], {"recipe": RECIPE, "input": IMAGE_INPUT}, {}, {}
        )
    with pytest.raises(ModelError, match='kind must be "image" or "sequence"'):
        save_bundle(tmp_path / "b", onnx_bytes, LABELS, {"recipe": RECIPE, "input": {}}, {}, {})
    assert list(tmp_path.iterdir()) == []


# --- weights.npz: what fine-tuning starts from -----------------------------------------


def write_with_weights(tmp_path, model, sample):
    from imgclass.train.run import state_arrays

    onnx_bytes = export_torch(model, sample)
    model_json = {
        "name": "cnn-small",
        "family": "cnn",
        "framework": "torch",
        "input_kind": "image",
        "args": {"dropout": 0.3},
    }
    preprocess = {"recipe": RECIPE, "input": IMAGE_INPUT}
    weights = state_arrays(model)
    return save_bundle(tmp_path / "w", onnx_bytes, LABELS, preprocess, {}, model_json, weights)


def test_weights_round_trip_rebuilds_the_same_model(tmp_path, digits):
    from imgclass.bundle import WEIGHTS, load_torch_model

    torch.manual_seed(3)
    model = create_model("cnn-small", 10, dropout=0.3).eval()
    x = digits[0][:8, None] / np.float32(255)
    path = write_with_weights(tmp_path, model, x[:1])
    info = json.loads((path / "model.json").read_text())
    data = (path / WEIGHTS).read_bytes()
    assert info["weights_sha256"] == hashlib.sha256(data).hexdigest()
    rebuilt, desc = load_torch_model(path)
    assert desc.name == "cnn-small" and desc.labels == LABELS and desc.args == {"dropout": 0.3}
    with torch.no_grad():
        expected = model(torch.from_numpy(x))
        got = rebuilt(torch.from_numpy(x))
    torch.testing.assert_close(got, expected)
    assert rebuilt.head[1].p == 0.3  # the model's own arguments, not the defaults
    assert load_bundle(path).labels == LABELS  # serving ignores the weights


def test_weights_are_plain_arrays_never_pickles(tmp_path, digits):
    """A pickled object array in weights.npz is refused, not unpickled."""
    import io

    from imgclass.bundle import WEIGHTS, read_weights

    model = create_model("cnn-small", 10).eval()
    path = write_with_weights(tmp_path, model, digits[0][:1, None] / np.float32(255))
    buffer = io.BytesIO()
    np.savez(buffer, evil=np.array([{"a": 1}], dtype=object))
    data = buffer.getvalue()
    (path / WEIGHTS).write_bytes(data)
    with pytest.raises(ModelError, match="does not match the sha256"):
        read_weights(path)
    info = json.loads((path / "model.json").read_text())
    info["weights_sha256"] = hashlib.sha256(data).hexdigest()
    (path / "model.json").write_text(json.dumps(info))
    with pytest.raises(ModelError, match="not a readable weights file"):
        read_weights(path)


def test_bundles_without_weights_say_how_to_get_them(tmp_path, cnn, digits):
    from imgclass.bundle import load_torch_model

    path = write(tmp_path, cnn, digits[0][:1, None] / np.float32(255))
    assert not (path / "weights.npz").exists()
    load_bundle(path)  # an old bundle still loads
    with pytest.raises(ModelError, match="has no weights.npz.*retrain it with this version"):
        load_torch_model(path)
