"""Int8 bundles: a real CNN trained on real digits, quantized with ONNX Runtime, measured
against its float self, served; and refused when calibration data ruin it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from imgclass.bundle import load_bundle, read_weights
from imgclass.cli import main
from imgclass.data.store import PreparedDataset, StoreWriter
from imgclass.errors import ConfigError
from imgclass.quantize import QuantizationRefused, quantize_bundle


@pytest.fixture(scope="module")
def run_dir(digits_dir, tmp_path_factory):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two cores shared by many test processes
    out = tmp_path_factory.mktemp("quantize") / "run"
    args = ["-q", "train", "--data", str(digits_dir), "--model", "cnn-resnet", "--out", str(out),
            "--epochs", "20", "--set", "model.width=16", "--no-track"]  # fmt: skip
    assert main(args) == 0
    torch.set_num_threads(before)
    return out


def test_an_int8_bundle_is_measured_written_and_served(run_dir, digits_dir, capsys):
    # --data left out: the dataset recorded in model.json. A few points of tolerance and
    # no speed demand: this small model (about 80% on 300 digits) may flip a few answers
    # and time noisily on a busy machine; both guards are tested below.
    args = ["--json", "--tolerance", "3", "--min-speedup", "0"]
    assert main(["-q", "quantize", str(run_dir / "bundle"), *args]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    out = run_dir / "bundle-int8"
    assert summary["out"] == str(out) and summary["split"] == "test"
    assert summary["int8"]["accuracy"] >= summary["float"]["accuracy"] - 0.03
    assert summary["agreement"] > 0.9 and summary["calibration_examples"] == 273
    assert summary["latency_ms"]["int8"] > 0 and summary["latency_ms"]["float"] > 0

    graph = onnx.load(str(out / "model.onnx")).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer)

    int8, original = load_bundle(out), load_bundle(run_dir / "bundle")  # hashes verified
    assert (
        int8.model_json["quantization"]["from_model_sha256"] == original.model_json["model_sha256"]
    )
    assert int8.labels == original.labels and int8.preprocess == original.preprocess
    for key, value in read_weights(run_dir / "bundle").items():  # float weights kept
        np.testing.assert_array_equal(read_weights(out)[key], value)
    # its metrics are its own: the same as evaluating the int8 bundle afresh; the report
    # still shows the first-layer filters (read through the int8 weights' DequantizeLinear)
    report = run_dir / "int8-report"
    args = [
        "-q",
        "evaluate",
        str(out),
        "--data",
        str(digits_dir),
        "--json",
        "--report",
        str(report),
    ]
    assert main(args) == 0
    assert (report / "filters.png").is_file() and (report / "activations.png").is_file()
    fresh = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert int8.metrics["test"]["accuracy"] == pytest.approx(fresh["accuracy"])
    assert int8.metrics["quantization"]["int8"]["accuracy"] == pytest.approx(fresh["accuracy"])

    from imgclass.serve.predictor import Predictor

    predictor = Predictor(out)
    assert predictor.name == "run-int8"
    shown = predictor.describe()["quantization"]  # what /v1/models and the Model tab show
    assert shown["format"] == "qdq-int8" and shown["int8"] == summary["int8"]
    assert Predictor(run_dir / "bundle").describe()["quantization"] is None
    with PreparedDataset.open(digits_dir) as ds:
        images, labels = ds.load("test")
    same = original.predict_proba(images).argmax(1) == int8.predict_proba(images).argmax(1)
    assert same.mean() > 0.9
    assert (int8.predict_proba(images).argmax(1) == labels).mean() > 0.6  # chance is 0.1

    with pytest.raises(ConfigError, match="quantized already"):
        quantize_bundle(out, digits_dir, out=run_dir / "again")
    with pytest.raises(ConfigError, match="must not be the bundle"):
        quantize_bundle(run_dir / "bundle", digits_dir, out=run_dir / "bundle")


def test_calibrating_on_the_wrong_images_is_refused_and_writes_nothing(
    run_dir, digits_dir, tmp_path
):
    """Blank training images give the activations no range: the int8 model guesses, its
    accuracy falls far below the float model's, and nothing is written."""
    with PreparedDataset.open(digits_dir) as ds:
        images, labels = ds.load("test")
        manifest = {**ds.manifest}
    data = tmp_path / "blank-train"
    with StoreWriter(data, (28, 28)) as writer:
        writer.append("train", np.zeros((64, 28, 28), np.uint8), np.arange(64) % 10)
        writer.append("test", images, labels)
        writer.finish({**manifest, "counts": {}})
    out = tmp_path / "int8"
    with pytest.raises(QuantizationRefused, match="accuracy points"):
        quantize_bundle(run_dir / "bundle", data, out=out, min_speedup=0)
    assert not out.exists()
    assert main(["-q", "quantize", str(run_dir / "bundle"), "--data", str(data),
                 "--out", str(out), "--min-speedup", "0"]) != 0  # fmt: skip
    assert not out.exists()


def test_an_int8_model_that_is_not_fast_enough_is_refused(run_dir, digits_dir, tmp_path):
    out = tmp_path / "int8"
    with pytest.raises(QuantizationRefused, match="not fast enough"):
        quantize_bundle(run_dir / "bundle", digits_dir, out=out, tolerance=100, min_speedup=1e6)
    assert not out.exists()
