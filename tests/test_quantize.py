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
    out = tmp_path_factory.mktemp("quantize") / "run"
    # one thread: two cores shared by many test processes (the trainer sets torch's
    # threads from num_threads, one per core by default, whatever was set here before)
    args = ["-q", "train", "--data", str(digits_dir), "--model", "cnn-resnet", "--out", str(out),
            "--epochs", "20", "--set", "model.width=16", "--set", "num_threads=1",
            "--no-track"]  # fmt: skip
    try:
        assert main(args) == 0
    finally:
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


@pytest.fixture(scope="module")
def int8_dir(run_dir, digits_dir):
    """The int8 bundle of ``run_dir``, whatever its accuracy (the tests below judge it)."""
    out = run_dir / "bundle-int8-checked"
    quantize_bundle(run_dir / "bundle", digits_dir, out=out, tolerance=100, min_speedup=0)
    return out


def test_int8_kernels_compute_what_the_quantized_graph_means(int8_dir, digits_dir):
    """ONNX Runtime's int8 kernels give the answers of the same QDQ graph computed in
    float. On x86 CPUs with AVX2 and no VNNI (AMD Zen 1-3, this project's machines) they
    add uint8 x int8 products in pairs in 16 bits and saturate: with 8-bit weights the
    first convolution, which sees ink at 255, went wrong and the digits model fell from
    84% to 67% (float emulation: 81%). 7-bit weights keep every pair under 32767."""
    import onnxruntime as ort

    model = onnx.load(str(int8_dir / "model.onnx"))
    weights = [onnx.numpy_helper.to_array(t) for t in model.graph.initializer
               if t.data_type == onnx.TensorProto.INT8]  # fmt: skip
    assert weights and max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64

    with PreparedDataset.open(digits_dir) as ds:
        images, _ = ds.load("test")
    x = load_bundle(int8_dir).to_input(images)

    def run(level: ort.GraphOptimizationLevel) -> np.ndarray:
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        return session.run(["probabilities"], {"input": x})[0]

    kernels = run(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)  # QLinearConv etc., as served
    emulated = run(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)  # Q/DQ as float arithmetic
    assert (kernels.argmax(1) == emulated.argmax(1)).mean() >= 0.98
    assert np.abs(kernels - emulated).max() < 0.05  # was 0.70 with 8-bit weights here


def test_int8_bundles_keep_the_output_layer_in_float(int8_dir, run_dir, digits_dir):
    """The classifier layer and the softmax stay float (issue 12): probabilities are not
    rounded to steps of 1/255, and they stay close to the float model's."""
    graph = onnx.load(str(int8_dir / "model.onnx")).graph
    producer = {name: node for node in graph.node for name in node.output}
    softmax = producer["probabilities"]
    divide = producer[softmax.input[0]]  # the calibration temperature, also kept in float
    gemm = producer[divide.input[0]]
    assert softmax.op_type == "Softmax" and divide.op_type == "Div" and gemm.op_type == "Gemm"
    floats = {t.name: t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    assert gemm.input[1] in floats and gemm.input[2] in floats  # weights and bias as trained
    temperature = float(onnx.numpy_helper.to_array(floats[divide.input[1]]))
    calibration = json.loads((int8_dir / "model.json").read_text())["calibration"]
    assert temperature == pytest.approx(calibration["temperature"], rel=1e-6)
    assert temperature != 1.0
    consumers = {name for node in graph.node if node.op_type == "QuantizeLinear"
                 for name in node.input}  # fmt: skip
    assert not consumers & {*softmax.output, *divide.output, *gemm.output}

    with PreparedDataset.open(digits_dir) as ds:
        images, _ = ds.load("test")
    proba = load_bundle(int8_dir).predict_proba(images)
    off_grid = np.abs(proba * 255 - np.round(proba * 255))
    assert (off_grid > 1e-3).mean() > 0.5  # quantized softmax outputs all sat on the grid
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    reference = load_bundle(run_dir / "bundle").predict_proba(images)
    assert np.abs(proba - reference).mean() < 0.02


def test_the_output_layer_is_found_behind_a_bias_add_and_a_flatten():
    """MatMul + Add heads (as some exporters write a Linear) count as one output layer."""
    from onnx import TensorProto, helper

    from imgclass.quantize import output_layer

    def tensor(name: str, *shape: int) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, shape, [0.0] * int(np.prod(shape)))

    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c"], name="conv"),
        helper.make_node("Flatten", ["c"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "w2"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "b2"], ["logits"], name="bias"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "head",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 3])],
        [tensor("w1", 2, 1, 1, 1), tensor("w2", 8, 3), tensor("b2", 3)],
    )
    assert sorted(n.name for n in output_layer(graph)) == ["bias", "matmul", "softmax"]
    no_weights = helper.make_graph(
        nodes[-1:],
        "bare",
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 3])],
    )
    assert output_layer(no_weights) == []


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


def test_the_default_bitmap_model_trains_exports_and_quantizes(digits_dir, tmp_path, capsys):
    # No --model: the default for bitmaps (cnn-fast, depthwise convolutions, channels-last
    # weights) through train, ONNX export and ONNX Runtime's int8 quantization.
    import onnxruntime as ort
    import torch

    before = torch.get_num_threads()
    out = tmp_path / "run"
    args = ["-q", "train", "--data", str(digits_dir), "--out", str(out), "--epochs", "2",
            "--set", "model.width=8", "--set", "num_threads=1", "--no-track"]  # fmt: skip
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(before)
    assert json.loads((out / "bundle" / "model.json").read_text())["name"] == "cnn-fast"
    capsys.readouterr()
    args = ["--json", "--tolerance", "100", "--min-speedup", "0", "--out", str(tmp_path / "q")]
    assert main(["-q", "quantize", str(out / "bundle"), *args]) == 0
    ops = {node.op_type for node in onnx.load(str(tmp_path / "q" / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    session = ort.InferenceSession(str(tmp_path / "q" / "model.onnx"))
    feed = {session.get_inputs()[0].name: np.zeros((3, 1, 28, 28), np.float32)}
    assert session.run(None, feed)[0].shape == (3, 10)
