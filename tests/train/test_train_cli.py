"""`imgclass train` end to end on real prepared data: a complete, verified bundle whose
metrics ONNX Runtime and `imgclass evaluate` reproduce; resume; held-out validation;
default models; errors for people."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from imgclass.bundle import FILES, load_bundle
from imgclass.cli import main
from imgclass.data.store import PreparedDataset, manifest_hash
from imgclass.train.config import resolve_config
from imgclass.train.run import default_model


def train(capsys, *args: str) -> dict:
    """Train through the CLI, untracked (tracking has its tests in tests/experiments)."""
    assert main(["-q", "train", *args, "--no-track", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def onnx_accuracy(bundle_dir, images: np.ndarray, labels: np.ndarray, flat: bool) -> float:
    """Accuracy of model.onnx run directly, inputs built by hand (not by imgclass)."""
    session = ort.InferenceSession(str(bundle_dir / "model.onnx"))
    x = images.astype(np.float32) / 255
    x = x.reshape(len(x), -1) if flat else x[:, None]
    proba = session.run(["probabilities"], {"input": x})[0]
    return float((proba.argmax(1) == labels).mean())


@pytest.mark.parametrize("model", ["cnn-small", "pca-svm"])
def test_train_writes_a_complete_bundle_evaluated_on_the_test_split(
    tmp_path, digits_dir, model, capsys
):
    out = tmp_path / "run"
    sets = ["n_components=20"] if model == "pca-svm" else ["num_threads=1"]
    result = train(
        capsys,
        "--data",
        str(digits_dir),
        "--model",
        model,
        "--out",
        str(out),
        "--epochs",
        "2",
        *[a for s in sets for a in ("--set", s)],
    )
    bundle_dir = out / "bundle"
    assert result["bundle"] == str(bundle_dir) and result["model"] == model
    weights = ["weights.npz"] if model != "pca-svm" else []  # torch weights, for fine-tuning
    assert sorted(p.name for p in bundle_dir.iterdir()) == sorted([*FILES, *weights])
    bundle = load_bundle(bundle_dir)  # verifies model.onnx against its sha256
    assert bundle.labels == [str(d) for d in range(10)]
    assert bundle.model_json["dataset"]["manifest_sha256"] == manifest_hash(digits_dir)
    assert bundle.model_json["name"] == model
    spec = bundle.preprocess["input"]
    flat = model == "pca-svm"
    assert spec == {
        "kind": "image",
        "layout": "flat" if flat else "nchw",
        "channels": 1,
        "size": [28, 28],
        "scale": 1 / 255,
    }
    with PreparedDataset.open(digits_dir) as ds:
        assert bundle.recipe == ds.recipe
        images, labels = ds.load("test")
    test = bundle.metrics["test"]
    assert test["n"] == 300 == len(labels)
    assert test["accuracy"] == pytest.approx(onnx_accuracy(bundle_dir, images, labels, flat))
    assert test["accuracy"] > (0.7 if flat else 0.2)  # chance is 0.1
    assert {"top3_accuracy", "map3", "macro_f1", "ece", "per_class"} <= set(test)
    history = bundle.metrics["history"]
    if flat:
        assert history == [] and bundle.metrics["train_seconds"] > 0
    else:
        assert [h["epoch"] for h in history] == [1, 2]
        assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"} <= set(
            history[0]
        )
        assert bundle.model_json["args"] == {"in_channels": 1, "input_size": 28}
    saved = resolve_config(file=out / "config.yaml")
    assert saved.model == model and saved.epochs == 2
    assert main(["evaluate", str(bundle_dir), "--data", str(digits_dir), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == pytest.approx(test["accuracy"])


def test_resume_continues_a_run_with_its_saved_settings(tmp_path, digits_dir, capsys):
    out = tmp_path / "run"
    common = ["--data", str(digits_dir), "--out", str(out), "--set", "num_threads=1"]
    first = train(capsys, *common, "--model", "cnn-small", "--epochs", "1", "--set", "lr=0.002")
    assert first["best_epoch"] == 1
    history_1 = json.loads((out / "bundle" / "metrics.json").read_text())["history"]
    # --resume: no --model, the killed run's config.yaml (lr=0.002), two epochs now
    train(capsys, "--data", str(digits_dir), "--out", str(out), "--resume", "--epochs", "2")
    metrics = json.loads((out / "bundle" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["history"][0] == history_1[0]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["model"], config["lr"], config["epochs"]) == ("cnn-small", 0.002, 2)


def test_validation_held_out_of_training_when_the_dataset_has_none(tmp_path, capsys):
    data = tmp_path / "digits"
    prepare = ["-q", "data", "prepare", "--builtin", "digits", "--per-class", "20"]
    assert main([*prepare, "--split", "90/0/10", "--out", str(data)]) == 0
    capsys.readouterr()
    out = tmp_path / "run"
    sets = ["val_fraction=0.2", "num_threads=1", "batch_size=32"]
    result = train(
        capsys,
        "--data",
        str(data),
        "--model",
        "cnn-small",
        "--out",
        str(out),
        "--epochs",
        "1",
        *[a for s in sets for a in ("--set", s)],
    )
    with PreparedDataset.open(data) as ds:
        n_train, n_test = ds.size("train"), ds.size("test")
        assert "valid" not in ds.splits
    assert result["holdout"]["n"] == round(0.2 * n_train)
    assert "valid" not in result and result["test"]["n"] == n_test
    history = json.loads((out / "bundle" / "metrics.json").read_text())["history"]
    assert history[0]["val_accuracy"] == pytest.approx(result["holdout"]["accuracy"])


def test_photos_train_the_transfer_model_in_two_phases(digits_dir, shared_data, tmp_path, capsys):
    with PreparedDataset.open(digits_dir) as ds:
        assert default_model(ds) == "cnn-fast"
    photos = tmp_path / "photos"
    source = shared_data / "photos" / "cats_vs_dogs"
    args = ["-q", "data", "prepare", str(source), "--per-class", "8", "--size", "64"]
    assert main([*args, "--out", str(photos)]) == 0
    capsys.readouterr()
    with PreparedDataset.open(photos) as ds:
        assert default_model(ds) == "transfer-efficientnet_lite0"
        n_test = ds.size("test")
    sets = ["frozen_epochs=1", "batch_size=8", "num_threads=1", "schedule=none", "lr=0.01"]
    out = tmp_path / "run"
    result = train(  # no --model: the default for photos
        capsys,
        "--data",
        str(photos),
        "--out",
        str(out),
        "--epochs",
        "2",
        *[a for s in sets for a in ("--set", s)],
    )
    assert result["model"] == "transfer-efficientnet_lite0" and result["test"]["n"] == n_test
    bundle = load_bundle(out / "bundle")
    assert bundle.model_json["args"]["in_channels"] == 3
    assert bundle.model_json["args"]["input_size"] == 64
    assert bundle.preprocess["input"]["channels"] == 3
    lrs = [h["lr"] for h in bundle.metrics["history"]]
    assert lrs == pytest.approx(
        [0.01, 0.01 * resolve_config(file=out / "config.yaml").unfreeze_lr_factor]
    )


def test_errors_are_for_people(tmp_path, digits_dir, capsys):
    base = ["train", "--data", str(digits_dir), "--out", str(tmp_path / "x")]
    assert main([*base, "--model", "stroke-rnn"]) == 2
    assert "needs strokes" in capsys.readouterr().err
    assert main([*base, "--model", "cnn-small", "--set", "model.in_channels=3"]) == 2
    assert "model.in_channels=3 does not fit" in capsys.readouterr().err
    assert main([*base, "--model", "cnn-small", "--set", "colour=red"]) == 2
    assert "unknown setting 'colour'" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "y")]) == 2
    assert "is not a prepared dataset" in capsys.readouterr().err


def test_human_summary(tmp_path, digits_dir, capsys):
    out = tmp_path / "run"
    args = ["--data", str(digits_dir), "--model", "pca-svm", "--out", str(out)]
    assert main(["-q", "train", *args, "--set", "n_components=10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("pca-svm: test accuracy 0.") and "top-3" in lines[0]
    assert lines[1] == f"bundle: {out / 'bundle'}"


def test_stroke_sequences_train_and_evaluate_through_the_bundle(tmp_path, capsys):
    data = tmp_path / "strokes"
    prepare = ["-q", "data", "prepare", "--builtin", "doodle-strokes", "--categories"]
    assert main([*prepare, "sun,cup,star", "--out", str(data)]) == 0
    capsys.readouterr()
    out = tmp_path / "rnn"
    settings = ["hidden=8", "layers=1", "max_len=60", "augment=sequence", "num_threads=1"]
    trained = train(
        capsys,
        "--data",
        str(data),
        "--model",
        "stroke-rnn",
        "--out",
        str(out),
        "--epochs",
        "1",
        *[a for s in settings for a in ("--set", s)],
    )
    bundle = load_bundle(out / "bundle")
    assert bundle.preprocess["input"] == {
        "kind": "sequence",
        "format": "stroke5",
        "max_len": 60,
        "scale": 1 / 255,
        "size": [28, 28],
    }
    assert bundle.model_json["args"]["features"] == 5
    assert main(["evaluate", str(out / "bundle"), "--data", str(data), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == pytest.approx(trained["test"]["accuracy"])
