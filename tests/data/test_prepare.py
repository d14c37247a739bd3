"""`imgclass data prepare | info | show` end to end, in-process and through the entry point."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgclass.cli import main
from imgclass.data.prepare import PrepareOptions, prepare
from imgclass.data.render import render_strokes, simplify_raw
from imgclass.data.split import SplitAssigner, parse_split
from imgclass.data.store import PreparedDataset
from imgclass.errors import ConfigError


def test_split_parsing():
    assert parse_split("70/10/20") == (70, 10, 20)
    assert parse_split("0/0/100") == (0, 0, 100)
    for bad in ("80/10", "80/10/11", "a/b/c", "-10/60/50"):
        with pytest.raises(ConfigError, match="--split"):
            parse_split(bad)


def test_split_is_stratified_and_deterministic():
    labels = ["a"] * 1000 + ["b"] * 300
    first = SplitAssigner((80, 10, 10), seed=1).assign(labels)
    again = SplitAssigner((80, 10, 10), seed=1).assign(labels)
    other = SplitAssigner((80, 10, 10), seed=2).assign(labels)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    for start, n in ((0, 1000), (1000, 300)):
        assert np.bincount(first[start : start + n], minlength=3).tolist() == [
            n * 8 // 10,
            n // 10,
            n // 10,
        ]
    streamed = SplitAssigner((80, 10, 10), seed=1)
    parts = np.concatenate([streamed.assign(labels[i : i + 7]) for i in range(0, len(labels), 7)])
    np.testing.assert_array_equal(parts, first)


def _npy_dir(tmp_path: Path, shared_data: Path, n: int = 40) -> Path:
    q = np.load(shared_data / "quickdraw_345x80.npz")
    classes = [str(c) for c in q["classes"]]
    folder = tmp_path / "npy"
    folder.mkdir()
    for name in ("cat", "sun", "cup"):
        np.save(
            folder / f"full_numpy_bitmap_{name}.npy",
            q["x"][q["y"] == classes.index(name)][:n].reshape(-1, 784),
        )
    return folder


def test_prepare_npy_files_into_a_stratified_shuffled_store(tmp_path, shared_data):
    folder = _npy_dir(tmp_path, shared_data)
    out = prepare(PrepareOptions(inputs=[str(folder)], out=str(tmp_path / "ds"), recipe="none"))
    with PreparedDataset.open(out) as ds:
        m = ds.manifest
        assert ds.classes == ["cat", "cup", "sun"]
        assert m["counts"] == {"train": 96, "valid": 12, "test": 12}
        assert all(m["counts_per_class"]["test"][c] == 4 for c in ds.classes)
        assert m["recipe"]["name"] == "none" and len(m["sources"]) == 3
        assert all(len(s["sha256"]) == 64 for s in m["sources"])
        x, y = ds.load("train")
        assert len(set(y[:20].tolist())) > 1  # classes are interleaved, not in blocks
        # Every stored image is one of the input bitmaps with the right label.
        q = {
            c: np.load(folder / f"full_numpy_bitmap_{c}.npy").reshape(-1, 28, 28)
            for c in ds.classes
        }
        for img, label in zip(x[:10], y[:10], strict=True):
            assert any(np.array_equal(img, ref) for ref in q[ds.classes[label]])
    again = prepare(PrepareOptions(inputs=[str(folder)], out=str(tmp_path / "ds2"), recipe="none"))
    with PreparedDataset.open(out) as a, PreparedDataset.open(again) as b:
        np.testing.assert_array_equal(a.load("test")[0], b.load("test")[0])


def test_prepare_strokes_renders_and_keeps_them(tmp_path, shared_data):
    with gzip.open(shared_data / "quickdraw_strokes_raw.ndjson.gz", "rt") as f:
        lines = [next(f) for _ in range(60)]
    src = tmp_path / "raw.ndjson"
    src.write_text("".join(lines))
    out = prepare(
        PrepareOptions(
            inputs=[str(src)], out=str(tmp_path / "ds"), recipe="none", split=(0, 0, 100)
        )
    )
    with PreparedDataset.open(out) as ds:
        assert ds.has_strokes and ds.manifest["stroke_kind"] == "raw"
        assert ds.splits == ["test"] and ds.size("test") == 60
        drawing = ds.strokes("test", 0)
        np.testing.assert_array_equal(render_strokes(simplify_raw(drawing)), ds.images("test")[0])
        words = sorted(json.loads(line)["word"] for line in lines)
        assert sorted(ds.classes[i] for i in ds.labels("test")) == words


def test_source_test_split_is_kept(tmp_path):
    rc = main(
        ["-q", "data", "prepare", "--builtin", "digits", "--out", str(tmp_path / "d"), "--json"]
    )
    assert rc == 0
    with PreparedDataset.open(tmp_path / "d") as ds:
        assert ds.size("test") == 500  # MNIST's own test digits, untouched by --split
        # Its training part is split 80:10 into train and valid (89% / 11% per class).
        assert ds.size("train") == 1780 and ds.size("valid") == 220
        assert ds.manifest["builtin"] == "digits" and "CC BY-SA" in ds.manifest["licence"]


def test_bad_input_fails_cleanly_with_no_output(tmp_path, capsys):
    src = tmp_path / "cat.ndjson"
    good = json.dumps({"word": "cat", "drawing": [[[0, 10], [0, 10]]]})
    src.write_text("\n".join([good] * 5000 + ["{oops"]) + "\n")
    out = tmp_path / "ds"
    assert main(["data", "prepare", str(src), "--out", str(out), "--recipe", "none"]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip()
        == f"error: {src}, line 5001: not valid JSON (Expecting property name enclosed in double quotes)"
    )
    assert list(tmp_path.iterdir()) == [src]


def test_existing_output_and_overwrite(tmp_path, capsys):
    args = [
        "-q",
        "data",
        "prepare",
        "--builtin",
        "doodles",
        "--per-class",
        "10",
        "--out",
        str(tmp_path / "d"),
    ]
    assert main(args) == 0
    assert main(args) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def test_info_and_show(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["-q", "data", "prepare", "--builtin", "doodles", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["data", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_classes"] == 20 and info["counts"]["test"] == 160
    assert info["recipe"]["name"] == "sketch" and info["bytes_on_disk"] > 0
    assert main(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "smiley face" in text and "CC BY 4.0" in text
    png = tmp_path / "grid.png"
    assert main(["data", "show", str(out), "--out", str(png), "--classes", "cat,sun"]) == 0
    from PIL import Image

    with Image.open(png) as img:
        assert img.size[1] == 2 * 56
    assert main(["data", "show", str(out), "--out", str(png), "--classes", "dragon"]) == 2


def test_entry_point_has_help_and_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("imgclass")
    result = subprocess.run([str(exe), "data", "prepare", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--per-class" in result.stdout
    missing = tmp_path / "nope.npy"
    result = subprocess.run(
        [str(exe), "data", "prepare", str(missing), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {missing}: no such file or folder"
