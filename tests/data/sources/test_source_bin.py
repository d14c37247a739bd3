"""Quick, Draw! binary `.bin`: records packed by hand with struct from known strokes."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from imgclass.data.sources import detect_format, open_source
from imgclass.errors import DataFormatError

CAT_A = [([0, 10, 255], [0, 20, 30]), ([5], [6])]
CAT_B = [([1, 2], [3, 4])]


def pack(key, strokes, country=b"GB", recognized=1):
    """One record in Google's layout (all little-endian)."""
    out = struct.pack("<Q2sBIH", key, country, recognized, 1490000000, len(strokes))
    for xs, ys in strokes:
        out += struct.pack("<H", len(xs)) + bytes(xs) + bytes(ys)
    return out


def test_records_become_simplified_strokes_with_ids_and_meta(tmp_path, read_all):
    path = tmp_path / "full_binary_cat.bin"
    path.write_bytes(pack(5027286841556992, CAT_A) + pack(43, CAT_B, b"DE", 0))
    assert detect_format(path) == "quickdraw-bin"
    source = open_source(path)
    assert source.classes() == ["cat"]
    chunks, labels = read_all(source)
    assert labels == ["cat", "cat"] and chunks[0].stroke_kind == "simplified"
    assert chunks[0].ids == ["5027286841556992", "43"]
    assert chunks[0].meta == {"countrycode": ["GB", "DE"], "recognized": [True, False]}
    first, second = chunks[0].strokes
    np.testing.assert_array_equal(first[0], [[0, 0], [10, 20], [255, 30]])
    np.testing.assert_array_equal(first[1], [[5, 6]])
    np.testing.assert_array_equal(second[0], [[1, 3], [2, 4]])
    assert first[0].dtype == np.float32


def test_chunks_per_class_categories_and_gzip(tmp_path, read_all):
    path = tmp_path / "house.bin.gz"
    path.write_bytes(gzip.compress(b"".join(pack(k, CAT_B) for k in range(1, 8))))
    chunks, labels = read_all(open_source(path))
    assert [len(c) for c in chunks] == [3, 3, 1] and labels == ["house"] * 7
    chunks, labels = read_all(open_source(path, per_class=4))
    assert [i for c in chunks for i in c.ids] == ["1", "2", "3", "4"]
    assert read_all(open_source(path, categories=["cat"]))[1] == []
    assert read_all(open_source(path, label="home"))[1] == ["home"] * 7


def test_truncated_record_names_the_drawing_index(tmp_path):
    path = tmp_path / "house.bin"
    data = pack(1, CAT_B) + pack(2, CAT_A)
    for cut, message in [(2, "stroke 1"), (8, "stroke 0"), (len(pack(2, CAT_A)) - 3, "header")]:
        path.write_bytes(data[:-cut])
        with pytest.raises(DataFormatError, match=rf"house\.bin, drawing 1: truncated.*{message}"):
            list(open_source(path).iter_chunks())


def test_drawing_without_points_is_refused(tmp_path):
    path = tmp_path / "house.bin"
    path.write_bytes(pack(1, CAT_B) + pack(2, []))
    with pytest.raises(DataFormatError, match=r"house\.bin, drawing 1: drawing has no points"):
        list(open_source(path).iter_chunks())


def test_corrupt_gzip_is_named(tmp_path):
    path = tmp_path / "house.bin.gz"
    data = gzip.compress(b"".join(pack(k, CAT_A) for k in range(50)))
    path.write_bytes(data[: len(data) - 20])
    with pytest.raises(DataFormatError, match=r"house\.bin\.gz: corrupt gzip"):
        list(open_source(path).iter_chunks())
