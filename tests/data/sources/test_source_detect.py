"""Format detection from names (and a peek inside folders and .npz) and open_source's options."""

from __future__ import annotations

import numpy as np
import pytest

from imgclass.data.sources import FORMATS, detect_format, open_source
from imgclass.errors import ConfigError, DataFormatError


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("full_numpy_bitmap_cat.npy", "quickdraw-npy"),
        ("full_simplified_cat.ndjson", "quickdraw-ndjson"),
        ("full_raw_The Eiffel Tower.ndjson.gz", "quickdraw-ndjson"),
        ("drawings.jsonl", "quickdraw-ndjson"),
        ("full_binary_cat.bin", "quickdraw-bin"),
        ("full_binary_cat.BIN.gz", "quickdraw-bin"),
        ("mnist_train.csv", "mnist-csv"),
        ("train-images-idx3-ubyte.gz", "mnist-idx"),
        ("t10k-labels.idx1-ubyte", "mnist-idx"),
    ],
)
def test_files_by_name(tmp_path, name, fmt):
    (tmp_path / name).write_bytes(b"")
    assert detect_format(tmp_path / name) == fmt
    assert fmt in FORMATS


def test_npz_by_its_keys(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((1, 2, 2), np.uint8), y=np.zeros(1, np.int64))
    np.savez(tmp_path / "b.npz", train=np.zeros((1, 2, 3), np.int16))
    assert detect_format(tmp_path / "a.npz") == "npz"
    assert detect_format(tmp_path / "b.npz") == "sketchrnn-npz"


def test_folders_by_their_contents(tmp_path):
    (tmp_path / "dogs" / "Images").mkdir(parents=True)
    (tmp_path / "digits").mkdir()
    (tmp_path / "digits" / "train-images-idx3-ubyte").write_bytes(b"")
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    assert detect_format(tmp_path / "dogs") == "stanford-dogs"
    assert detect_format(tmp_path / "digits") == "mnist-idx"
    assert detect_format(tmp_path / "photos") == "imagefolder"


def test_unknown_missing_and_gzipped_numpy_files(tmp_path):
    (tmp_path / "data.xyz").write_text("?")
    with pytest.raises(DataFormatError, match=r"data\.xyz: cannot tell the format .*pass --format"):
        detect_format(tmp_path / "data.xyz")
    with pytest.raises(DataFormatError, match=r"nope\.npy: no such file or folder"):
        open_source(tmp_path / "nope.npy", format="quickdraw-npy")
    (tmp_path / "cat.npy.gz").write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"cat\.npy\.gz: gzipped numpy files .* gunzip it"):
        open_source(tmp_path / "cat.npy.gz")


def test_bad_options_are_config_errors(tmp_path, sources_dir):
    path = sources_dir / "full_numpy_bitmap_cat.npy"
    with pytest.raises(ConfigError, match="unknown format 'png'"):
        open_source(path, format="png")
    with pytest.raises(ConfigError, match="format quickdraw-npy: .*'skip_bad'"):
        open_source(path, skip_bad=True)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match="per_class must be a positive integer"):
            open_source(path, per_class=bad)
