"""``imgclass predict`` on real digits saved in every format and polarity, and on real
Quick, Draw! strokes; references computed straight from the data-layer functions and
ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from eval_support import (
    image_spec,
    raw_stroke_lines,
    save_test_bundle,
    sequence_onnx,
    template_onnx,
)
from PIL import Image

from imgclass.cli import main
from imgclass.cli.predict import is_simplified
from imgclass.data.preprocess import apply_recipe, get_recipe
from imgclass.data.render import render_strokes, simplify_raw
from imgclass.data.sequences import encode_drawings
from imgclass.data.sources.ndjson import parse_drawing

SKETCHES = ["apple", "star", "sun", "umbrella", "fish"]


def run_predict(capsys, *args: str) -> tuple[int, dict, str]:
    code = main(["-q", "predict", *args, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def session_proba(onnx_bytes: bytes, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": images[:, None].astype(np.float32) / 255})[0]


def top1(result: dict) -> str:
    return result["predictions"][0]["label"]


@pytest.fixture(scope="module")
def mnist_bundle(digits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("predict") / "mnist"
    return save_test_bundle(
        out, digits.onnx_bytes, digits.labels, get_recipe("mnist"), image_spec()
    )


def save_variants(folder: Path, digit: np.ndarray, i: int) -> list[Path]:
    """One real digit (white on black, 28x28) as files of other sizes, formats, polarity."""
    white_on_black = Image.fromarray(digit)
    big_paper = Image.fromarray(255 - digit).resize((112, 112), Image.BILINEAR)
    ink = np.zeros((84, 84, 4), np.uint8)
    ink[..., 3] = np.asarray(white_on_black.resize((84, 84), Image.BILINEAR))  # black ink, alpha
    files = {
        f"exact{i}.png": white_on_black,
        f"paper{i}.jpg": big_paper.convert("RGB"),
        f"paper{i}.webp": big_paper,
        f"dark{i}.bmp": white_on_black.resize((60, 60), Image.BILINEAR),
        f"dark{i}.gif": white_on_black.resize((84, 84), Image.BILINEAR),
        f"transparent{i}.png": Image.fromarray(ink, "RGBA"),
    }
    for name, image in files.items():
        image.save(folder / name)
    return [folder / name for name in files]


def test_images_of_any_size_format_and_polarity(capsys, digits, mnist_bundle, tmp_path):
    picked = digits.test_x[:10]
    files = [f for i, d in enumerate(picked) for f in save_variants(tmp_path, d, i)]
    code, out, err = run_predict(capsys, str(mnist_bundle), *map(str, files), "--top-k", "10")
    assert code == 0 and not err and not out["errors"]
    results = out["results"]
    assert [r["file"] for r in results] == [str(f) for f in files]
    expected = session_proba(digits.onnx_bytes, apply_recipe(get_recipe("mnist"), picked))
    per_digit = len(files) // len(picked)
    agree = 0
    for i in range(len(picked)):
        exact = results[i * per_digit]  # lossless and as stored: the reference exactly
        got = {p["label"]: p["probability"] for p in exact["predictions"]}
        np.testing.assert_allclose([got[c] for c in digits.labels], expected[i], atol=1e-5)
        variants = results[i * per_digit + 1 : (i + 1) * per_digit]
        agree += sum(top1(r) == top1(exact) for r in variants)
    assert agree >= 0.9 * (per_digit - 1) * len(picked)
    right = sum(top1(results[i * per_digit]) == str(digits.test_y[i]) for i in range(10))
    assert right >= 7


@pytest.fixture(scope="module")
def sketch_bundle(shared_data, tmp_path_factory) -> tuple[Path, bytes]:
    """Templates from real Quick, Draw! bitmaps 10..79 of five classes (the strokes used
    below are drawings 0..9 of the same classes, so they are held out)."""
    recipe = get_recipe("sketch")
    with np.load(shared_data / "quickdraw_345x80.npz") as d:
        x, y, names = d["x"], d["y"], list(d["classes"])
    parts = [np.flatnonzero(y == names.index(c))[10:80] for c in SKETCHES]
    images = apply_recipe(recipe, x[np.concatenate(parts)])
    labels = np.repeat(np.arange(len(SKETCHES)), [len(p) for p in parts])
    onnx_bytes = template_onnx(images, labels, len(SKETCHES))
    out = tmp_path_factory.mktemp("predict") / "sketch"
    return save_test_bundle(out, onnx_bytes, SKETCHES, recipe, image_spec()), onnx_bytes


@pytest.fixture(scope="module")
def stroke_lines(shared_data) -> list[str]:
    return raw_stroke_lines(shared_data, SKETCHES, 10)


def drawings_of(lines: list[str]) -> list[list[np.ndarray]]:
    return [parse_drawing(json.loads(line)["drawing"], "test", "line") for line in lines]


def test_raw_ndjson_strokes(capsys, sketch_bundle, stroke_lines, tmp_path):
    bundle, onnx_bytes = sketch_bundle
    src = tmp_path / "raw.ndjson"
    src.write_text("\n".join(stroke_lines) + "\n")
    code, out, _ = run_predict(capsys, str(bundle), str(src), "--top-k", "5")
    assert code == 0
    results = out["results"]
    assert [r["line"] for r in results] == list(range(1, len(stroke_lines) + 1))
    words = [json.loads(line)["word"] for line in stroke_lines]
    assert [r["word"] for r in results] == words
    rendered = np.stack([render_strokes(simplify_raw(d)) for d in drawings_of(stroke_lines)])
    expected = session_proba(onnx_bytes, apply_recipe(get_recipe("sketch"), rendered))
    got = np.array(
        [
            [{p["label"]: p["probability"] for p in r["predictions"]}[c] for c in SKETCHES]
            for r in results
        ]
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)
    accuracy = np.mean([top1(r) == w for r, w in zip(results, words, strict=True)])
    assert accuracy >= 0.6  # five classes: chance is 0.2


def test_simplified_strokes_are_not_simplified_again(capsys, sketch_bundle, stroke_lines, tmp_path):
    bundle, _ = sketch_bundle
    raw = drawings_of(stroke_lines[:8])
    simple = [simplify_raw(d) for d in raw]
    assert not any(is_simplified(d) for d in raw)
    assert all(is_simplified(d) for d in simple)
    for name, drawings in (("raw", raw), ("simple", simple)):
        lines = [json.dumps({"drawing": [s.T.tolist() for s in d]}) for d in drawings]
        (tmp_path / f"{name}.ndjson").write_text("\n".join(lines))
    _, out, _ = run_predict(
        capsys, str(bundle), str(tmp_path / "raw.ndjson"), str(tmp_path / "simple.ndjson")
    )
    first, second = out["results"][:8], out["results"][8:]
    # The simplified file holds exactly what the raw one becomes: same pictures, same guesses.
    for a, b in zip(first, second, strict=True):
        assert [p["label"] for p in a["predictions"]] == [p["label"] for p in b["predictions"]]
        np.testing.assert_allclose(
            [p["probability"] for p in a["predictions"]],
            [p["probability"] for p in b["predictions"]],
            atol=1e-6,
        )


def test_bad_inputs_are_reported_and_the_rest_classified(
    capsys, digits, mnist_bundle, stroke_lines, tmp_path
):
    good = tmp_path / "good.png"
    Image.fromarray(digits.test_x[0]).save(good)
    fake = tmp_path / "fake.png"
    fake.write_text("not a picture")
    mixed = tmp_path / "mixed.ndjson"
    mixed.write_text(stroke_lines[0] + "\n{not json\n" + '{"word": "x"}\n' + stroke_lines[1])
    missing = tmp_path / "missing.jpg"
    code, out, err = run_predict(
        capsys, str(mnist_bundle), str(fake), str(good), str(missing), str(mixed)
    )
    assert code == 2  # bad input, though the rest was classified
    assert [r["file"] for r in out["results"]] == [str(good), str(mixed), str(mixed)]
    assert [r.get("line") for r in out["results"]] == [None, 1, 4]
    failed = [e["file"] for e in out["errors"]]
    assert failed == [str(fake), str(missing), f"{mixed}:2", f"{mixed}:3"]
    lines = err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines)
    assert str(fake) in lines[0] and "no such file" in lines[1]
    assert "line 2" in lines[2] and "no 'drawing'" in lines[3]


def test_sequence_bundle_reads_strokes_only(capsys, digits, stroke_lines, tmp_path):
    onnx_bytes = sequence_onnx(len(SKETCHES))
    spec = {"kind": "sequence", "format": "stroke5", "max_len": 150}
    bundle = save_test_bundle(tmp_path / "seq", onnx_bytes, SKETCHES, get_recipe("sketch"), spec)
    src = tmp_path / "strokes.ndjson"
    src.write_text("\n".join(stroke_lines[:12]))
    picture = tmp_path / "digit.png"
    Image.fromarray(digits.test_x[0]).save(picture)
    code, out, err = run_predict(capsys, str(bundle), str(src), str(picture), "--top-k", "9")
    assert code == 2 and "reads strokes" in err and str(picture) in err
    seqs, lengths = encode_drawings(drawings_of(stroke_lines[:12]), "stroke5", 150, raw=True)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input": seqs, "lengths": lengths})[0]
    assert len(out["results"]) == 12
    for row, result in zip(expected, out["results"], strict=True):
        assert len(result["predictions"]) == len(SKETCHES)  # --top-k 9 shows all five
        got = {p["label"]: p["probability"] for p in result["predictions"]}
        np.testing.assert_allclose([got[c] for c in SKETCHES], row, atol=1e-6)


def test_text_output_and_top_k(capsys, digits, mnist_bundle, tmp_path):
    picture = tmp_path / "seven.png"
    Image.fromarray(digits.test_x[0]).save(picture)  # the first test digit is a 7
    assert main(["-q", "predict", str(mnist_bundle), str(picture), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(picture)
    assert len(lines) == 3
    assert lines[1].startswith("  1. 7 ") and lines[2].startswith("  2. ")
    probability = float(lines[1].split()[2].rstrip("%")) / 100
    assert lines[1].count("█") == round(probability * 30)
    assert main(["predict", str(mnist_bundle), str(picture), "--top-k", "0"]) == 2
    assert "--top-k must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("xs", "ys", "expected"),
    [
        ([0, 255, 100], [0, 120, 40], True),  # Google's form
        ([1, 254], [0, 90], True),  # RDP dropped the extreme points
        ([10, 255], [10, 100], False),  # not aligned to the top-left
        ([0, 600], [0, 300], False),  # a canvas in pixels
        ([0, 254.5], [0, 10], False),  # not whole numbers
        ([0, 120], [0, 80], False),  # not scaled to 255
    ],
)
def test_is_simplified(xs, ys, expected):
    drawing = [np.column_stack([xs, ys]).astype(np.float32)]
    assert is_simplified(drawing) is expected
    assert not is_simplified([np.column_stack([xs, ys, np.arange(len(xs))])])  # with time
