"""`imgclass data prepare | info | show` through the command line, in-process and once
through the installed entry point: exit codes, one-line errors, no partial output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclass.cli import main
from imgclass.data.show import CELL
from imgclass.data.store import PreparedDataset


@pytest.fixture(scope="module")
def doodles(tmp_path_factory) -> Path:
    """The built-in doodles, prepared once for the read-only tests of this file."""
    out = tmp_path_factory.mktemp("doodles") / "d"
    assert main(["-q", "data", "prepare", "--builtin", "doodles", "--out", str(out)]) == 0
    return out


def test_builtin_doodles_are_the_20_pictionary_categories(doodles, shared_data):
    with PreparedDataset.open(doodles) as ds:
        m = ds.manifest
        assert len(ds.classes) == 20 and "smiley face" in ds.classes
        assert m["counts"] == {"train": 1280, "valid": 160, "test": 160}
        assert all(m["counts_per_class"]["test"][c] == 8 for c in ds.classes)
        assert m["recipe"]["name"] == "sketch" and m["builtin"] == "doodles"
        assert "CC BY 4.0" in m["licence"]
        assert m["created"] and m["imgclass_version"] and m["format_version"] == 1
    # The shipped bitmaps are exactly the real ones of ../shared/data.
    q = np.load(shared_data / "quickdraw_345x80.npz")
    shipped = np.load(Path(m["sources"][0]["path"]))
    cat = [str(c) for c in q["classes"]].index("cat")
    mine = list(shipped["classes"]).index("cat")
    np.testing.assert_array_equal(shipped["x"][shipped["y"] == mine], q["x"][q["y"] == cat])


def test_builtin_digits_keep_mnist_own_test_split(tmp_path, shared_data):
    out = tmp_path / "d"
    assert main(["-q", "data", "prepare", "--builtin", "digits", "--out", str(out)]) == 0
    with PreparedDataset.open(out) as ds:
        assert ds.classes == [str(d) for d in range(10)] and ds.recipe["name"] == "mnist"
        assert ds.size("test") == 500  # MNIST's own test digits, untouched by --split
        # Its training part is split 80:10 into train and valid (89% / 11% per class).
        assert ds.size("train") == 1780 and ds.size("valid") == 220
        assert "CC BY-SA" in ds.manifest["licence"]
        # The test split holds the first 50 test digits of each class from MNIST.
        m = np.load(shared_data / "mnist.npz")
        firsts = np.concatenate([np.flatnonzero(m["y_test"] == d)[:50] for d in range(10)])
        x, y = ds.load("test")
        assert sorted(ds.classes[v] for v in y) == sorted(str(v) for v in m["y_test"][firsts])


def test_builtin_doodle_strokes_keep_the_raw_drawings(tmp_path):
    out = tmp_path / "s"
    argv = ["-q", "data", "prepare", "--builtin", "doodle-strokes", "--out", str(out)]
    assert main([*argv, "--per-class", "5"]) == 0
    with PreparedDataset.open(out) as ds:
        assert ds.has_strokes and ds.manifest["stroke_kind"] == "raw"
        assert len(ds.classes) == 20 and sum(ds.size(s) for s in ds.splits) == 100
        assert ds.strokes(ds.splits[0], 0)[0].shape[1] == 3


def test_info_json_and_table(doodles, capsys):
    assert main(["data", "info", str(doodles), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for key in (
        "classes",
        "counts",
        "counts_per_class",
        "image_shape",
        "recipe",
        "sources",
        "has_strokes",
        "seed",
        "split_percentages",
        "bytes_on_disk",
        "licence",
    ):
        assert key in info
    assert info["counts"]["test"] == 160 and info["bytes_on_disk"] > 100_000
    assert len(info["sources"][0]["sha256"]) == 64
    assert main(["data", "info", str(doodles)]) == 0
    text = capsys.readouterr().out
    assert "20 classes" in text and "CC BY 4.0" in text
    assert "smiley face" in text and "1,280" in text


def test_info_abbreviates_hundreds_of_classes(tmp_path, shared_data, capsys):
    out = tmp_path / "q"
    src = str(shared_data / "quickdraw_345x80.npz")
    argv = ["-q", "data", "prepare", src, "--per-class", "10", "--recipe", "none"]
    assert main([*argv, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["data", "info", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) < 50 and any("315 more classes" in line for line in lines)
    assert any(line.split()[:1] == ["median"] for line in lines)


def test_show_writes_a_labelled_png(doodles, tmp_path, capsys):
    png = tmp_path / "grid.png"
    argv = ["data", "show", str(doodles), "--out", str(png)]
    assert main([*argv, "--classes", "cat,sun", "--per-class", "5"]) == 0
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 5 * CELL
        two_rows = img.size[1]
        pixels = np.asarray(img.convert("L"))
    # the first tile of each row holds a real drawing (white ink on black)
    assert pixels[-CELL:, -5 * CELL :].max() == 255
    assert main([*argv, "--per-class", "3"]) == 0
    with Image.open(png) as img:  # the same caption on top, then a row per class
        assert img.size[1] - two_rows == 18 * CELL
    capsys.readouterr()
    assert main([*argv, "--classes", "dragon"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown class(es) ['dragon']")


def test_existing_output_and_overwrite(tmp_path, capsys):
    out = tmp_path / "d"
    argv = ["-q", "data", "prepare", "--builtin", "doodles", "--per-class", "10", "--out", str(out)]
    assert main(argv) == 0
    assert main(argv) == 2
    assert (
        capsys.readouterr().err == f"error: {out} already exists; pass --overwrite to replace it\n"
    )
    assert main([*argv, "--overwrite", "--seed", "5"]) == 0
    with PreparedDataset.open(out) as ds:
        assert ds.manifest["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--split", "80/10/5"], "error: --split '80/10/5': expected three non-negative integers"),
        (["--split", "a/b/c"], "error: --split 'a/b/c': expected three integers like 80/10/10"),
        (["--seed", "-1"], "error: --seed must be a non-negative integer"),
        (["--per-class", "0"], "error: "),
        (["--recipe", "nope"], "error: unknown recipe 'nope'"),
        (["--categories", "dragon"], "error: none of --categories dragon was found"),
    ],
)
def test_bad_options_give_one_line_and_no_output(tmp_path, capsys, extra, message):
    out = tmp_path / "d"
    assert main(["data", "prepare", "--builtin", "doodles", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_bad_input_fails_with_the_file_and_line(tmp_path, capsys):
    src = tmp_path / "cat.ndjson"
    good = json.dumps({"word": "cat", "drawing": [[[0, 10], [0, 10]]]})
    src.write_text("\n".join([good] * 5000 + ["{oops"]) + "\n")
    out = tmp_path / "ds"
    assert main(["data", "prepare", str(src), "--out", str(out), "--recipe", "none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {src}, line 5001: ") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == [src]


def test_inputs_and_builtin_together_are_refused(tmp_path, capsys):
    argv = ["data", "prepare", "x.npy", "--builtin", "digits", "--out", str(tmp_path / "d")]
    assert main(argv) == 2
    assert capsys.readouterr().err == "error: give either INPUT files or --builtin, not both\n"


def test_info_on_a_folder_that_is_not_a_store(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path)]) == 2
    assert "is not a prepared dataset" in capsys.readouterr().err


def test_entry_point_has_help_and_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("imgclass")
    for argv in (
        ["data", "prepare", "--help"],
        ["data", "info", "--help"],
        ["data", "show", "--help"],
    ):
        result = subprocess.run([str(exe), *argv], capture_output=True, text=True)
        assert result.returncode == 0 and "usage: imgclass data" in result.stdout
    missing = tmp_path / "nope.npy"
    result = subprocess.run(
        [str(exe), "data", "prepare", str(missing), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {missing}: no such file or folder"
    assert list(tmp_path.iterdir()) == []
