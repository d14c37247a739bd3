"""One contract over every registered model (scikit-learn estimator_checks style).

For each name in ``list_models()``: it builds for 3 and 20 classes, its forward pass
has the documented shapes, it exports to ONNX and ONNX Runtime agrees with the
framework for batches of 1 and 7 (and two lengths for sequences), a few optimisation
steps on a tiny real batch reduce the loss, its state round-trips, its registered
defaults, test configuration and search space name only settings the trainer accepts,
and a briefly trained model round-trips through a bundle (hash, labels, preprocess.json,
model.json, ONNX against the framework, weights.npz).

Each model is built in the small ``test_cfg`` of its registration, never through a
per-family branch here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from imgclass.models import create_model, list_models, model_info
from imgclass.onnx_export import export_onnx
from imgclass.train.config import TrainConfig

torch.set_num_threads(1)

MODELS = list_models()
# What the test data decides (1-channel 28x28 digits, stroke-5 sequences); constructors
# that do not take an argument never see it (create_model keeps only their own).
DATA_ARGS = {"in_channels": 1, "input_size": 28, "features": 5}


def build(name: str, classes: int):
    """The model in the small configuration its registration gives for tests."""
    return create_model(name, classes, **{**DATA_ARGS, **model_info(name).test_cfg})


def inputs(name: str, digits, n: int = 7):
    """Model inputs for ``name``: (x,) or (sequences, lengths), as float32 numpy arrays."""
    info = model_info(name)
    x, _ = digits
    if info.input_kind == "sequence":
        rng = np.random.default_rng(0)
        return rng.normal(size=(n, 30, 5)).astype(np.float32), np.array(
            [30, 3, 17, 1, 22, 9, 30][:n]
        )
    if info.framework == "sklearn":
        return (x[:n].reshape(n, -1),)
    return (x[:n, None],)


def fitted_sklearn(name: str, classes: int, digits):
    x, y = digits
    keep = y < classes if classes <= 10 else np.ones(len(y), bool)
    return build(name, classes).fit(x[keep].reshape(keep.sum(), -1), y[keep])


@pytest.fixture(scope="module")
def digits(shared_data):
    m = np.load(shared_data / "mnist.npz")
    return m["x_train"][:300].astype(np.float32) / 255.0, m["y_train"][:300].astype(np.int64)


def torch_proba(model, feed) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(*[torch.from_numpy(a) for a in feed]), dim=1).numpy()


def test_every_family_is_registered():
    assert {"pca-svm", "cnn-small", "cnn-3conv", "cnn-resnet", "cnn-fast", "stroke-rnn"} <= set(
        MODELS
    )
    assert "transfer-efficientnet_lite0" in MODELS


@pytest.mark.parametrize("name", MODELS)
def test_registration_is_complete_and_accepted_by_the_trainer(name):
    info = model_info(name)
    assert info.name == name
    assert info.input_kind in ("image", "sequence")
    assert info.framework in ("torch", "sklearn")
    for key in ("epochs", "batch_size", "lr", "optimizer", "schedule", "augment"):
        assert key in info.default_cfg, key
    import inspect

    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    ctor = set(inspect.signature(info.constructor).parameters)
    assert set(info.default_cfg) <= train_keys | ctor
    assert set(info.test_cfg) <= train_keys | ctor
    if info.search_space is not None:
        space = info.search_space(FirstChoiceTrial())  # keys may be model.<arg>, augment.<k>
        assert {k.partition(".")[0] for k in space} <= train_keys | ctor


class FirstChoiceTrial:
    """A stand-in for an Optuna trial: the low bound or the first choice."""

    def suggest_float(self, name, low, high, log=False):
        return low

    def suggest_int(self, name, low, high, step=1, log=False):
        return low

    def suggest_categorical(self, name, choices):
        return choices[0]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("classes", [3, 20])
def test_forward_export_and_onnx_parity(name, classes, digits):
    torch.manual_seed(0)
    info = model_info(name)
    if info.framework == "sklearn":
        if classes > 10:
            pytest.skip("MNIST has 10 classes to fit a scikit-learn model on")
        model = fitted_sklearn(name, classes, digits)
        feed = inputs(name, digits)
        expected = model.predict_proba(feed[0])
    else:
        model = build(name, classes).eval()
        feed = inputs(name, digits)
        with torch.no_grad():
            logits = model(*[torch.from_numpy(a) for a in feed])
        assert logits.shape == (7, classes) and logits.dtype == torch.float32
        expected = torch.softmax(logits, dim=1).numpy()
    assert expected.shape == (7, classes)
    data = export_onnx(model, *feed)
    graph = onnx.load_from_string(data)
    assert [i.name for i in graph.graph.input] == (
        ["input", "lengths"] if info.input_kind == "sequence" else ["input"]
    )
    assert [o.name for o in graph.graph.output] == ["probabilities"]
    session = ort.InferenceSession(data)
    names = [i.name for i in session.get_inputs()]
    for batch in (1, 7):
        got = session.run(
            ["probabilities"], dict(zip(names, [a[:batch] for a in feed], strict=True))
        )[0]
        np.testing.assert_allclose(got, expected[:batch], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in MODELS if model_info(n).input_kind == "sequence"])
def test_sequence_models_take_any_length_in_onnx(name, digits):
    torch.manual_seed(0)
    model = build(name, 4).eval()
    seqs, lengths = inputs(name, digits)
    session = ort.InferenceSession(export_onnx(model, seqs, lengths))
    for steps in (30, 55):  # traced at 30; 55 adds padding the model must ignore
        padded = np.zeros((7, steps, 5), np.float32)
        padded[:, :30] = seqs
        got = session.run(["probabilities"], {"input": padded, "lengths": lengths})[0]
        np.testing.assert_allclose(got, torch_proba(model, (seqs, lengths)), rtol=1e-4, atol=1e-5)


def tiny_batch(name: str, digits) -> tuple[list[torch.Tensor], torch.Tensor]:
    """32 examples and 3-class targets: real digits (label mod 3), or sequences whose
    class is the sign of their summed first feature."""
    x, y = digits
    if model_info(name).input_kind == "sequence":
        seqs = torch.from_numpy(
            np.random.default_rng(1).normal(size=(32, 12, 5)).astype(np.float32)
        )
        total = seqs[:, :, 0].sum(dim=1)
        target = (total > -1).long() + (total > 1).long()
        return [seqs, torch.full((32,), 12)], target
    return [torch.from_numpy(inputs(name, (x[:32], None), 32)[0])], torch.from_numpy(y[:32] % 3)


@pytest.mark.parametrize("name", [n for n in MODELS if model_info(n).framework == "torch"])
def test_a_few_steps_reduce_the_loss_and_state_round_trips(name, digits):
    torch.manual_seed(0)
    feed, target = tiny_batch(name, digits)
    model = build(name, 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = torch.nn.functional.cross_entropy(model(*feed), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
    again = build(name, 3)
    again.load_state_dict(model.state_dict())
    model.eval()
    again.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(*feed), again(*feed))


@pytest.mark.parametrize("name", [n for n in MODELS if model_info(n).framework == "sklearn"])
def test_sklearn_models_fit_beyond_chance_and_give_probabilities(name, digits):
    x, y = digits
    model = fitted_sklearn(name, 10, digits)
    proba = model.predict_proba(x.reshape(len(x), -1))
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    log_loss = -np.mean(np.log(proba[np.arange(len(y)), y] + 1e-12))
    assert log_loss < 0.5 * math.log(10)


# --- the bundle round trip: train, save, load back ------------------------------------


@pytest.fixture(scope="module")
def strokes_dir(tmp_path_factory):
    """Real raw Quick, Draw! strokes of three categories, prepared through the CLI."""
    from imgclass.cli import main

    out = tmp_path_factory.mktemp("strokes-data") / "strokes"
    args = ["-q", "data", "prepare", "--builtin", "doodle-strokes", "--categories", "sun,cup,star"]
    assert main([*args, "--out", str(out)]) == 0
    return out


@dataclasses.dataclass
class Trained:
    """A model trained briefly in its registered test configuration, and its ONNX export."""

    model: Any  # a torch module in eval mode, or a fitted scikit-learn estimator
    cfg: TrainConfig
    onnx: bytes
    weights: dict[str, np.ndarray] | None


def split_feed(ds, cfg: TrainConfig, split: str, n: int | None = None) -> tuple[np.ndarray, ...]:
    """The first ``n`` examples of a split as the framework model takes them: float32
    (n, C, H, W), flat (n, F) for scikit-learn, or (sequences, lengths)."""
    from imgclass.train.run import encode_split, images_to_input

    info = model_info(cfg.model)
    if info.input_kind == "sequence":
        return encode_split(ds, split, cfg, n)
    images = ds.images(split)[:n]
    if info.framework == "sklearn":
        return (images.reshape(len(images), -1).astype(np.float32) / np.float32(255),)
    return (images_to_input(images),)


def train_tiny(name: str, ds) -> Trained:
    """``name`` with its registration's test_cfg and the data's own input arguments
    (as ``imgclass train`` derives them): a few Adam steps on 32 training examples, or
    scikit-learn's fit on the whole (small) training split; then exported to ONNX."""
    from imgclass.onnx_export import export_onnx
    from imgclass.train.config import resolve_config
    from imgclass.train.run import model_arguments, state_arrays

    info = model_info(name)
    cfg = resolve_config(name, **info.test_cfg)
    cfg.model_args = model_arguments(cfg, info, ds)
    model = create_model(name, len(ds.classes), **cfg.model_args)
    if info.framework == "sklearn":
        x = split_feed(ds, cfg, "train")[0]
        model.fit(x, ds.labels("train"))
        return Trained(model, cfg, export_onnx(model, x[:2]), None)
    torch.manual_seed(0)
    feed = [torch.from_numpy(a) for a in split_feed(ds, cfg, "train", 32)]
    target = torch.from_numpy(ds.labels("train")[:32])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(*feed), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    sample = [a.numpy() for a in feed]
    return Trained(model, cfg, export_onnx(model, *sample), state_arrays(model))


def framework_proba(trained: Trained, feed: tuple[np.ndarray, ...]) -> np.ndarray:
    if trained.weights is None:
        return trained.model.predict_proba(feed[0])
    return torch_proba(trained.model, feed)


@pytest.mark.parametrize("name", MODELS)
def test_bundle_round_trip(name, request, tmp_path):
    """Train ``name`` briefly, save its bundle as ``imgclass train`` does, load it back:
    the hash is verified, labels, preprocess.json and model.json say what was saved,
    ONNX Runtime gives the trained model's probabilities, and the weights reload."""
    import hashlib
    import json
    import shutil

    from imgclass.bundle import WEIGHTS, load_bundle, load_torch_model, save_bundle
    from imgclass.data.store import PreparedDataset, manifest_hash
    from imgclass.errors import ModelError
    from imgclass.train.run import input_spec, model_description

    info = model_info(name)
    data = request.getfixturevalue("strokes_dir" if info.input_kind == "sequence" else "digits_dir")
    with PreparedDataset.open(data) as ds:
        trained = train_tiny(name, ds)
        preprocess = {"recipe": ds.recipe, "input": input_spec(ds, trained.cfg, info)}
        described = model_description(trained.cfg, info, ds, data)
        metrics = {"test": {"accuracy": 0.5, "n": 1}}
        path = save_bundle(
            tmp_path / "bundle", trained.onnx, ds.classes, preprocess, metrics, described,
            trained.weights,
        )  # fmt: skip
        test_feed = split_feed(ds, trained.cfg, "test", 16)
        test_images = ds.images("test")[:16]
        test_drawings = ds.all_strokes("test")[:16] if ds.has_strokes else None
        raw = ds.manifest.get("stroke_kind") == "raw"
        classes, recipe = ds.classes, ds.recipe

    bundle = load_bundle(path)
    assert bundle.labels == classes == json.loads((path / "labels.json").read_text())
    assert bundle.preprocess == preprocess and bundle.recipe == recipe
    model_json = bundle.model_json
    assert (model_json["name"], model_json["family"]) == (name, info.family)
    assert (model_json["framework"], model_json["input_kind"]) == (info.framework, info.input_kind)
    assert model_json["args"] == trained.cfg.model_args
    assert model_json["num_classes"] == len(classes)
    assert model_json["dataset"]["manifest_sha256"] == manifest_hash(data)
    onnx_bytes = (path / "model.onnx").read_bytes()
    assert onnx_bytes == trained.onnx
    assert model_json["model_sha256"] == hashlib.sha256(onnx_bytes).hexdigest()

    expected = framework_proba(trained, test_feed)
    if info.input_kind == "sequence":
        got = bundle.predict_drawings(test_drawings, raw=raw)  # the bundle's own encoding
    else:
        got = bundle.predict_proba(test_images)  # the bundle's own input conversion
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

    if info.framework == "torch":
        rebuilt, desc = load_torch_model(path)
        assert desc.has_weights and desc.args == trained.cfg.model_args
        torch.testing.assert_close(
            torch.from_numpy(torch_proba(rebuilt, test_feed)), torch.from_numpy(expected)
        )
    else:
        assert not (path / WEIGHTS).exists()
        with pytest.raises(ModelError, match="has no torch weights"):
            load_torch_model(path)

    tampered = shutil.copytree(path, tmp_path / "tampered")
    (tampered / "model.onnx").write_bytes(onnx_bytes[:-1] + bytes([onnx_bytes[-1] ^ 0xFF]))
    with pytest.raises(ModelError, match="model.onnx does not match the sha256"):
        load_bundle(tampered)
