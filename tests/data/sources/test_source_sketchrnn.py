"""sketch-rnn `.npz`: stroke-3 sequences under train/valid/test, read without running pickles."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile

import numpy as np
import pytest

from imgclass.data.sources import detect_format, open_source
from imgclass.errors import DataFormatError

# (dx, dy, pen_lifted): the pen lifts after the 2nd and the 4th point.
SEQ_A = np.array([[1, 2, 0], [3, 4, 1], [10, -1, 0], [1, 1, 1]], dtype=np.int16)
STROKES_A = [[[1, 2], [4, 6]], [[14, 5], [15, 6]]]  # cumulative sums, by hand
SEQ_B = np.array([[5, 5, 0], [-300, 2, 1]], dtype=np.int16)
STROKES_B = [[[5, 5], [-295, 7]]]


def objects(*seqs):
    arr = np.empty(len(seqs), dtype=object)
    arr[:] = list(seqs)
    return arr


class Py2Pickler(pickle._Pickler):
    """Writes bytes the way Python 2 wrote ``str`` (SHORT_BINSTRING / BINSTRING opcodes)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def write_py2_npz(path, **arrays):
    """An .npz as Python 2's numpy wrote Google's files: protocol-2 pickles of object arrays."""
    with zipfile.ZipFile(path, "w") as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            header = {"descr": "|O", "fortran_order": False, "shape": arr.shape}
            np.lib.format.write_array_header_1_0(buf, header)
            pickled = io.BytesIO()
            Py2Pickler(pickled, protocol=2).dump(arr)
            buf.write(
                pickled.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            )
            zf.writestr(f"{key}.npy", buf.getvalue())


def read_chunks(path, **options):
    return list(open_source(path, **options).iter_chunks())


def assert_strokes(drawing, expected):
    assert len(drawing) == len(expected)
    for stroke, points in zip(drawing, expected, strict=True):
        assert stroke.dtype == np.float32
        np.testing.assert_array_equal(stroke, points)


def test_splits_come_from_the_keys_and_strokes_are_rebuilt(tmp_path):
    path = tmp_path / "sketchrnn_cat.npz"
    np.savez(path, train=objects(SEQ_A, SEQ_B), valid=objects(SEQ_B), test=objects(SEQ_A))
    assert detect_format(path) == "sketchrnn-npz"
    chunks = read_chunks(path)
    assert [(c.split, len(c), c.ids) for c in chunks] == [  # own test and valid first
        ("test", 1, ["test:0"]),
        ("valid", 1, ["valid:0"]),
        ("train", 2, ["train:0", "train:1"]),
    ]
    assert all(c.labels == ["cat"] * len(c) and c.stroke_kind == "raw" for c in chunks)
    assert_strokes(chunks[2].strokes[0], STROKES_A)
    assert_strokes(chunks[2].strokes[1], STROKES_B)


def test_python2_files_like_googles_are_read(tmp_path):
    path = tmp_path / "cat.npz"
    write_py2_npz(path, train=objects(SEQ_A, SEQ_B), test=objects(SEQ_B))
    with pytest.raises(ValueError):  # what plain numpy says without pickles
        np.load(path, allow_pickle=False)["train"]
    chunks = read_chunks(path)
    assert [(c.split, len(c)) for c in chunks] == [("test", 1), ("train", 2)]
    assert_strokes(chunks[1].strokes[0], STROKES_A)
    assert_strokes(chunks[0].strokes[0], STROKES_B)


def test_equal_length_numeric_arrays_need_no_pickle(tmp_path):
    path = tmp_path / "cat.npz"
    np.savez(path, train=np.stack([SEQ_A, SEQ_A]))
    chunks = read_chunks(path)
    assert len(chunks[0]) == 2
    assert_strokes(chunks[0].strokes[1], STROKES_A)


def test_per_class_counts_per_split_and_categories_and_label(tmp_path):
    path = tmp_path / "cat.npz"
    np.savez(path, train=objects(SEQ_A, SEQ_B, SEQ_A), test=objects(SEQ_B, SEQ_A))
    assert [len(c) for c in read_chunks(path, per_class=1)] == [1, 1]
    assert read_chunks(path, categories=["dog"]) == []
    assert {lab for c in read_chunks(path, label="kitten") for lab in c.labels} == {"kitten"}


class _RunsCode:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


class _OddArray:
    def __reduce__(self):
        return (np.zeros(1).__reduce__()[0], (np.ndarray, (10,), b"b"))


@pytest.mark.parametrize(
    ("payload", "message"),
    [("code", "refusing to load io.open"), ("odd", "unexpected array reconstruction")],
)
def test_pickles_that_are_not_plain_arrays_are_refused_unrun(tmp_path, payload, message):
    path = tmp_path / "evil.npz"
    target = tmp_path / "imgclass-pwned"
    np.savez(path, train=objects(_RunsCode(target) if payload == "code" else _OddArray()))
    with pytest.raises(DataFormatError, match=rf"evil\.npz: array 'train' .*{message}"):
        read_chunks(path)
    assert not target.exists()


@pytest.mark.parametrize(
    "bad",
    [np.zeros((3, 2), np.int16), np.zeros((0, 3), np.int16), np.array([["a", "b", "c"]])],
)
def test_malformed_sequences_are_named(tmp_path, bad):
    path = tmp_path / "cat.npz"
    np.savez(path, train=objects(SEQ_A), valid=objects(SEQ_A, bad))
    with pytest.raises(DataFormatError, match=r"cat\.npz, valid\[1\]: expected a \(n, 3\)"):
        read_chunks(path)


def test_npz_without_split_keys_is_not_sketchrnn(tmp_path):
    np.savez(tmp_path / "cat.npz", other=np.zeros(3))
    with pytest.raises(DataFormatError, match="no train, valid or test array"):
        open_source(tmp_path / "cat.npz", format="sketchrnn-npz")
