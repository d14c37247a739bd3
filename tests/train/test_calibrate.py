"""Temperature scaling (issue 12, item 5): the fit recovers a known temperature, the
exported graph computes softmax(logits / T) for every family, a trained bundle records
and applies it, and the ECE before and after shows in evaluate."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from imgclass.bundle import load_bundle
from imgclass.cli import main
from imgclass.evaluate.metrics import expected_calibration_error, undo_temperature
from imgclass.models import create_model
from imgclass.onnx_export import (
    TEMPERATURE,
    apply_temperature,
    export_onnx,
    graph_temperature,
    logits_name,
    with_logits_output,
)
from imgclass.train.calibrate import fit_temperature, softmax


def run(data: bytes, **feeds: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], feeds)[0]


@pytest.mark.parametrize("true_t", [0.6, 2.5])
def test_the_fit_recovers_a_known_temperature(true_t):
    # Labels drawn from softmax(z / T): the maximum-likelihood T is the true one.
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, size=(20_000, 10))
    p = softmax(logits / true_t)
    labels = (p.cumsum(1) > rng.random((len(p), 1))).argmax(1)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_t, rel=0.05)
    # and what it fixes: the ECE of the raw logits is large, of the fitted ones small
    assert expected_calibration_error(labels, softmax(logits)) > 0.05
    assert expected_calibration_error(labels, softmax(logits / fitted)) < 0.02


def test_the_image_graph_gives_softmax_of_logits_over_t_as_torch_does():
    torch.manual_seed(0)
    model = create_model("cnn-small", 5).eval()
    x = torch.rand(6, 1, 28, 28)
    graph = apply_temperature(export_onnx(model, x.numpy()), 1.7)
    with torch.no_grad():
        expected = torch.softmax(model(x) / 1.7, dim=1).numpy()
    np.testing.assert_allclose(run(graph, input=x.numpy()), expected, atol=1e-6)
    assert graph_temperature(graph) == pytest.approx(1.7)
    meta = {p.key: p.value for p in onnx.load_from_string(graph).metadata_props}
    assert float(meta["temperature"]) == pytest.approx(1.7)


def test_a_second_temperature_replaces_the_first():
    torch.manual_seed(0)
    model = create_model("cnn-small", 3).eval()
    x = torch.rand(2, 1, 28, 28)
    twice = apply_temperature(apply_temperature(export_onnx(model, x.numpy()), 3.0), 0.5)
    with torch.no_grad():
        expected = torch.softmax(model(x) / 0.5, dim=1).numpy()
    np.testing.assert_allclose(run(twice, input=x.numpy()), expected, atol=1e-6)
    divs = [n for n in onnx.load_from_string(twice).graph.node if TEMPERATURE in n.input]
    assert len(divs) == 1


def test_the_stroke_graph_applies_the_temperature():
    torch.manual_seed(0)
    model = create_model("stroke-rnn", 4, hidden=16).eval()
    x, lengths = torch.randn(3, 12, 5), torch.tensor([12, 4, 7])
    graph = apply_temperature(export_onnx(model, x.numpy(), lengths.numpy()), 2.0)
    with torch.no_grad():
        expected = torch.softmax(model(x, lengths) / 2.0, dim=1).numpy()
    got = run(graph, input=x.numpy(), lengths=lengths.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_pca_svm_probabilities_are_tempered(shared_data):
    m = np.load(shared_data / "mnist.npz")
    x = m["x_train"][:300].reshape(300, -1).astype(np.float32) / 255
    y = m["y_train"][:300].astype(np.int64)
    model = create_model("pca-svm", 10, n_components=20).fit(x, y)
    graph = export_onnx(model, x[:2])
    p = model.predict_proba(x[:20])
    expected = p**0.5 / (p**0.5).sum(1, keepdims=True)  # softmax(log p / 2)
    np.testing.assert_allclose(
        run(apply_temperature(graph, 2.0), input=x[:20]), expected, atol=1e-5
    )
    # the logits read for the fit are log p
    session = ort.InferenceSession(with_logits_output(graph), providers=["CPUExecutionProvider"])
    logits = session.run(["imgclass_logits"], {"input": x[:20]})[0]
    np.testing.assert_allclose(np.exp(logits), p, rtol=1e-4, atol=1e-6)


def test_undoing_the_temperature_gives_the_model_own_probabilities():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(50, 7))
    calibrated = softmax(logits / 2.3).astype(np.float32)
    np.testing.assert_allclose(undo_temperature(calibrated, 2.3), softmax(logits), atol=1e-5)


# --- a real training run ----------------------------------------------------------------


@pytest.fixture(scope="module")
def calibrated_run(digits_dir, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("calibrate") / "run"
    args = ["-q", "train", "--data", str(digits_dir), "--model", "cnn-small", "--out", str(out),
            "--epochs", "4", "--no-track"]  # fmt: skip
    assert main(args) == 0
    return out / "bundle"


def test_training_fits_records_and_applies_a_temperature(calibrated_run, digits_dir):
    from imgclass.data.store import PreparedDataset

    info = json.loads((calibrated_run / "model.json").read_text())
    t = info["calibration"]["temperature"]
    assert info["calibration"]["fitted_on"] == "valid" and t != 1.0
    graph = (calibrated_run / "model.onnx").read_bytes()
    assert graph_temperature(graph) == pytest.approx(t, rel=1e-6)
    metrics = json.loads((calibrated_run / "metrics.json").read_text())
    assert metrics["calibration"]["temperature"] == t
    assert {"ece", "ece_uncalibrated", "temperature"} <= set(metrics["test"])
    # what the bundle serves is softmax(logits / T) of the graph's own logits
    with PreparedDataset.open(digits_dir) as ds:
        images, _ = ds.load("test")
    bundle = load_bundle(calibrated_run)
    session = ort.InferenceSession(with_logits_output(graph), providers=["CPUExecutionProvider"])
    name = logits_name(graph)  # the temperature's dividend
    assert "over_temperature" not in name
    logits = session.run([name], {"input": bundle.to_input(images)})[0]
    np.testing.assert_allclose(bundle.predict_proba(images), softmax(logits / t), atol=1e-5)


def test_evaluate_reports_the_ece_before_and_after(calibrated_run, digits_dir, capsys, tmp_path):
    args = ["-q", "evaluate", str(calibrated_run), "--data", str(digits_dir)]
    assert main([*args, "--report", str(tmp_path / "report")]) == 0
    text = capsys.readouterr().out
    assert "before calibration" in text and "temperature" in text
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["ece_uncalibrated"] >= 0 and report["temperature"] > 0
    assert "ECE before calibration" in (tmp_path / "report" / "index.html").read_text()
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["ece"] == pytest.approx(report["ece"]) and "ece_uncalibrated" in out


def test_a_bundle_without_a_temperature_still_loads_and_evaluates(
    calibrated_run, digits_dir, tmp_path, capsys
):
    """Bundles made before calibration: model.json without "calibration"; T = 1."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(calibrated_run, old)
    info = json.loads((old / "model.json").read_text())
    del info["calibration"]
    (old / "model.json").write_text(json.dumps(info))
    bundle = load_bundle(old)
    assert bundle.temperature is None
    assert main(["-q", "evaluate", str(old), "--data", str(digits_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "ece" in out and "ece_uncalibrated" not in out


def test_a_validation_split_without_errors_does_not_drive_the_temperature_to_its_bound():
    """Regression: with every validation example right (the photo model on 120 photos),
    the NLL falls all the way to T's lower bound (0.05), promising near-certainty; the
    fit now stops where the mean confidence meets the accuracy those examples support,
    (n + 1) / (n + 2)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 120)
    logits = rng.normal(0, 0.3, (120, 2))
    logits[np.arange(120), labels] += 3.0  # all right, about 95% sure: under-confident
    t = fit_temperature(logits, labels)
    assert t > 0.06
    confidence = softmax(logits / t).max(axis=1).mean()
    assert confidence == pytest.approx(121 / 122, abs=1e-3)
    assert confidence > softmax(logits).max(axis=1).mean()  # still sharpened, not softened
