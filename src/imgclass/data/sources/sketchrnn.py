"""sketch-rnn ``<category>.npz``: stroke-3 sequences under ``train``, ``valid``, ``test``.

Each sequence is an (n, 3) array of (dx, dy, pen_lifted): offsets from the previous
point, and 1 where the pen leaves the paper after that point. We rebuild absolute
strokes by a cumulative sum, split after each pen lift.

Why a restricted unpickler: Google's files store each split as a numpy *object*
array (sequences of different lengths), which numpy writes as a pickle stream,
and many were written by Python 2. A user's file must never run code, so we never
call the general unpickler (``np.load(allow_pickle=True)``). Arrays without
objects are read with ``allow_pickle=False``; object arrays go through an
unpickler that can build nothing but numpy arrays and dtypes (the three globals
numpy's own array pickles use) and refuses every other global, so a crafted file
fails with a ``DataFormatError`` instead of executing anything.

A split is read whole (one category's split is a few megabytes), then converted
and yielded a chunk at a time.
"""

from __future__ import annotations

import io
import pickle
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from imgclass.data.sources.base import (
    OWN_SPLITS_FIRST,
    Chunk,
    Drawing,
    LabelFilter,
    label_from_filename,
)
from imgclass.data.sources.fileio import read_npy_header
from imgclass.data.sources.npz import npz_keys
from imgclass.errors import DataFormatError

SPLIT_KEYS = ("train", "valid", "test")
MAX_MEMBER_BYTES = 2 << 30
# numpy's array-rebuilding function, whichever module holds it in this numpy version
_RECONSTRUCT: Callable[..., np.ndarray] = np.zeros(1).__reduce__()[0]  # type: ignore[assignment,index]


def _empty_array(subtype: object, shape: object, dtype: object) -> np.ndarray:
    """numpy's ``_reconstruct``, limited to what array pickles ask of it: an empty ndarray."""
    if subtype is not np.ndarray or shape != (0,):
        raise pickle.UnpicklingError("unexpected array reconstruction arguments")
    return _RECONSTRUCT(np.ndarray, (0,), dtype)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _empty_array,  # numpy 1.x and Python 2 files
    ("numpy._core.multiarray", "_reconstruct"): _empty_array,  # numpy 2.x
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and dtypes and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def read_sequences(path: Path, key: str) -> np.ndarray:
    """Split ``key`` of a sketch-rnn ``.npz``: an array of (n_i, 3) stroke-3 sequences."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
            if zf.getinfo(f"{key}.npy").file_size > MAX_MEMBER_BYTES:
                raise DataFormatError(path, f"array {key!r} is larger than {MAX_MEMBER_BYTES}")
            raw = io.BytesIO(f.read())
    except (zipfile.BadZipFile, zlib.error, KeyError, OSError, EOFError) as exc:
        raise DataFormatError(path, f"cannot read array {key!r} ({exc})") from None
    _shape, _fortran, dtype = read_npy_header(raw, path, f"array {key!r}")
    try:
        if dtype.hasobject:
            # latin1: Python 2 wrote array bytes as str; numpy expects them back this way.
            value = NumpyOnlyUnpickler(raw, encoding="latin1").load()
        else:
            raw.seek(0)
            value = np.lib.format.read_array(raw, allow_pickle=False)
    except (ValueError, TypeError, MemoryError, pickle.UnpicklingError, EOFError) as exc:
        raise DataFormatError(
            path, f"array {key!r} is not a readable numpy array ({exc})"
        ) from None
    if not isinstance(value, np.ndarray):
        raise DataFormatError(path, f"array {key!r} is not a numpy array")
    return value


class SketchRnnSource:
    """sketch-rnn ``.npz``: one class per file, the split taken from the key.

    Chunks hold ``strokes`` (float32 (n_points, 2), absolute positions starting
    from the first offset, ``stroke_kind="raw"`` because the range is not 0..255),
    ``split`` ("train", "valid" or "test") and ids ``"<key>:<index>"``.
    ``per_class`` counts per split.
    """

    format = "sketchrnn-npz"

    def __init__(
        self,
        path: str | Path,
        *,
        categories: list[str] | None = None,
        per_class: int | None = None,
        label: str | None = None,
    ) -> None:
        self.path = str(path)
        self.label = label or label_from_filename(self.path, ("sketchrnn_",))
        self.categories = categories
        self.per_class = per_class
        self.keys = [k for k in OWN_SPLITS_FIRST if k in npz_keys(path)]
        if not self.keys:
            raise DataFormatError(path, "no train, valid or test array (not a sketch-rnn file)")
        LabelFilter(categories, per_class)  # validates per_class now

    def classes(self) -> list[str] | None:
        return [self.label]

    def iter_chunks(self, chunk_size: int = 4096) -> Iterator[Chunk]:
        if not LabelFilter(self.categories).wants(self.label):
            return
        path = Path(self.path)
        for key in self.keys:
            sequences = read_sequences(path, key)
            n = min(len(sequences), self.per_class or len(sequences))
            for start in range(0, n, chunk_size):
                stop = min(n, start + chunk_size)
                yield Chunk(
                    labels=[self.label] * (stop - start),
                    source=self.path,
                    strokes=[
                        stroke3_to_strokes(sequences[i], path, f"{key}[{i}]")
                        for i in range(start, stop)
                    ],
                    stroke_kind="raw",
                    split=key,
                    ids=[f"{key}:{i}" for i in range(start, stop)],
                )


def stroke3_to_strokes(seq: object, path: str | Path, where: str) -> Drawing:
    """stroke-3 (n, 3) (dx, dy, pen_lifted) -> absolute strokes, split after each pen lift.

    Example: [[1, 2, 0], [3, 4, 1], [10, 0, 0], [1, 1, 1]] -> strokes
    [[1, 2], [4, 6]] and [[14, 6], [15, 7]].
    """
    arr = np.asarray(seq) if isinstance(seq, np.ndarray) else np.asarray([])
    if arr.ndim != 2 or arr.shape[1] != 3 or len(arr) == 0 or arr.dtype.kind not in "iuf":
        raise DataFormatError(
            path, f"expected a (n, 3) numeric stroke-3 array, found {arr.dtype} {arr.shape}", where
        )
    xy = np.cumsum(arr[:, :2].astype(np.float64), axis=0).astype(np.float32)
    if not np.isfinite(xy).all():
        raise DataFormatError(path, "stroke-3 offsets must be finite numbers", where)
    pieces = np.split(xy, np.flatnonzero(arr[:, 2] > 0) + 1)
    return [np.ascontiguousarray(p) for p in pieces if len(p)]
