"""``imgclass evaluate`` end to end: a real bundle, a real prepared dataset, and the
numbers checked against ONNX Runtime and scikit-learn run directly on the stored data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from eval_support import image_spec, prepare_npz, raw_stroke_lines, save_test_bundle, sequence_onnx
from sklearn.metrics import accuracy_score, f1_score, top_k_accuracy_score

from imgclass.cli import main
from imgclass.data.store import PreparedDataset


def evaluate_json(capsys, *args: str) -> dict:
    assert main(["-q", "evaluate", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def reference(onnx_bytes: bytes, data: Path, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(true labels as bundle indices, probabilities) straight from the store and ORT."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    with PreparedDataset.open(data) as ds:
        images, y = ds.load("test")
        names = [ds.classes[i] for i in y]
    proba = session.run(None, {"input": images[:, None].astype(np.float32) / 255})[0]
    return np.array([labels.index(n) for n in names]), proba


def test_json_numbers_match_a_direct_reference(capsys, digits, digits_bundle, digits_data):
    out = evaluate_json(capsys, str(digits_bundle), "--data", str(digits_data), "--batch-size", "7")
    y, proba = reference(digits.onnx_bytes, digits_data, digits.labels)
    pred = proba.argmax(axis=1)
    assert out["n"] == len(y) > 100
    assert out["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert out["accuracy"] > 0.7  # a nearest-mean classifier on real digits
    assert out["top3_accuracy"] == pytest.approx(top_k_accuracy_score(y, proba, k=3))
    assert out["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert out["map3"] > out["accuracy"]
    assert 0 <= out["ece"] < 1
    assert set(out["per_class"]) == set(digits.labels)
    assert out["model"] == "templates" and out["split"] == "test"
    assert "confusion" not in out


def test_text_summary(capsys, digits_bundle, digits_data):
    numbers = evaluate_json(capsys, str(digits_bundle), "--data", str(digits_data))
    assert main(["-q", "evaluate", str(digits_bundle), "--data", str(digits_data)]) == 0
    text = capsys.readouterr().out
    assert f"accuracy        {numbers['accuracy']:.4f}" in text
    assert f"{numbers['n']} examples, 10 classes" in text
    assert "worst classes (F1):" in text and "most confused:" in text


@pytest.fixture(scope="module")
def subset_data(digits, tmp_path_factory) -> Path:
    """Only the digits 7, 1 and 3 (given in that order)."""
    keep = np.isin(digits.test_y, [7, 1, 3])
    x, y = digits.test_x[keep], digits.test_y[keep]
    codes = np.select([y == 7, y == 1, y == 3], [0, 1, 2])
    return prepare_npz(tmp_path_factory.mktemp("subset"), "subset", x, codes, ["7", "1", "3"])


def test_classes_are_matched_by_name(capsys, digits, digits_bundle, subset_data, tmp_path):
    # The same model with its classes in reverse order (columns permuted to match).
    from eval_support import template_onnx

    reversed_labels = digits.labels[::-1]
    onnx_bytes = template_onnx(digits.train_x, 9 - digits.train_y, 10)
    from imgclass.data.preprocess import get_recipe

    flipped = save_test_bundle(
        tmp_path / "flipped", onnx_bytes, reversed_labels, get_recipe("none"), image_spec()
    )
    y, proba = reference(digits.onnx_bytes, subset_data, digits.labels)
    expected = accuracy_score(y, proba.argmax(axis=1))
    for bundle in (digits_bundle, flipped):
        out = evaluate_json(capsys, str(bundle), "--data", str(subset_data))
        assert out["accuracy"] == pytest.approx(expected)
        assert {c for c, v in out["per_class"].items() if v["support"]} == {"1", "3", "7"}
        # Macro F1 over the three classes present, not the ten the model knows.
        present = np.unique(y)
        assert out["macro_f1"] == pytest.approx(
            f1_score(y, proba.argmax(axis=1), labels=present, average="macro")
        )


def test_unknown_class_is_a_clear_error(capsys, digits, digits_bundle, tmp_path):
    x, y = digits.test_x[:40], (digits.test_y[:40] % 3)
    data = prepare_npz(tmp_path, "odd", x, y, ["0", "1", "kangaroo"])
    assert main(["evaluate", str(digits_bundle), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "'kangaroo'" in err and "does not know" in err and str(data) in err


def test_wrong_image_size_and_missing_split(capsys, digits, digits_bundle, tmp_path):
    from imgclass.data.prepare import PrepareOptions, prepare

    src = tmp_path / "big.npz"
    np.savez(src, x=digits.test_x[:30], y=digits.test_y[:30], classes=np.array(digits.labels))
    big = prepare(
        PrepareOptions(
            inputs=[str(src)], out=str(tmp_path / "big"), recipe="none", size=32, split=(50, 0, 50)
        )
    )
    assert main(["evaluate", str(digits_bundle), "--data", str(big)]) == 2
    assert "takes 28x28 images" in capsys.readouterr().err
    data = prepare_npz(
        tmp_path,
        "novalid",
        digits.test_x[:30],
        digits.test_y[:30],
        digits.labels,
        split=(50, 0, 50),
    )
    assert main(["evaluate", str(digits_bundle), "--data", str(data), "--split", "valid"]) == 2
    assert "no examples in the 'valid' split" in capsys.readouterr().err


def test_report_folder(capsys, digits_bundle, digits_data, tmp_path):
    report = tmp_path / "report"
    report.mkdir()  # an earlier report there is replaced, stale pictures and all
    (report / "report.json").write_text("{}")
    (report / "stale.png").write_bytes(b"x")
    out = evaluate_json(
        capsys, str(digits_bundle), "--data", str(digits_data), "--report", str(report)
    )
    assert out["report"] == str(report / "index.html")
    assert not (report / "stale.png").exists()
    page = (report / "index.html").read_text()
    pictures = re.findall(r'<img src="([^"]+)"', page)
    expected = {
        "confusion.png",
        "confused_pairs.png",
        "misclassified.png",
        "per_class_f1.png",
        "reliability.png",
        "training_curves.png",
        "filters.png",
        "activations.png",
    }
    assert set(pictures) == expected
    for name in pictures:
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((report / "report.json").read_text())
    assert saved["accuracy"] == out["accuracy"] and saved["n"] == out["n"]
    assert np.array(saved["confusion"]).sum() == out["n"]
    assert sum(saved["calibration"]["count"]) == out["n"]
    assert f"{out['accuracy']:.4f}" in page
    assert page.count("<tr>") >= 10 + 5  # per-class rows and the summary
    assert "<script" not in page
    assert not list(tmp_path.glob(".*partial*"))


def test_report_never_replaces_other_files(capsys, digits_bundle, digits_data, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    args = ["evaluate", str(digits_bundle), "--data", str(digits_data), "--report", str(other)]
    assert main(args) == 2
    assert "holds other files" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_sequence_bundle_on_a_stroke_dataset(capsys, shared_data, tmp_path):
    from imgclass.data.prepare import PrepareOptions, prepare
    from imgclass.data.sequences import encode_drawings

    classes = ["apple", "star", "sun"]
    src = tmp_path / "strokes.ndjson"
    src.write_text("\n".join(raw_stroke_lines(shared_data, classes, 10)) + "\n")
    data = prepare(PrepareOptions(inputs=[str(src)], out=str(tmp_path / "ds"), split=(40, 0, 60)))
    onnx_bytes = sequence_onnx(3)
    with PreparedDataset.open(data) as ds:
        recipe = ds.recipe
        drawings = ds.all_strokes("test")
        y = ds.labels("test")
        assert ds.classes == classes
    spec = {"kind": "sequence", "format": "stroke5", "max_len": 120}
    bundle = save_test_bundle(tmp_path / "seq", onnx_bytes, classes, recipe, spec)
    out = evaluate_json(capsys, str(bundle), "--data", str(data))
    seqs, lengths = encode_drawings(drawings, "stroke5", 120, raw=True)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    proba = session.run(None, {"input": seqs, "lengths": lengths})[0]
    assert out["n"] == len(y) >= 15
    assert out["accuracy"] == pytest.approx(accuracy_score(y, proba.argmax(axis=1)))


def test_evaluation_never_imports_torch(digits_bundle, digits_data, tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from imgclass.cli import main; "
        f"rc = main(['-q', 'evaluate', {str(digits_bundle)!r}, '--data', {str(digits_data)!r}, "
        f"'--json']); assert rc == 0 and 'matplotlib' not in sys.modules; "
        f"rc = main(['-q', 'evaluate', {str(digits_bundle)!r}, '--data', {str(digits_data)!r}, "
        f"'--report', {str(tmp_path / 'r')!r}]); assert rc == 0; "
        "print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
