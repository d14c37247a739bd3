"""``.npz`` files: labelled bitmap arrays, and sketch-rnn stroke-3 sets.

Bitmaps: ``x`` (n, H, W) uint8, ``y`` (n,) ints, ``classes`` (k,) str (like the
files in ../shared/data), or MNIST-style ``x_train``/``y_train``/``x_test``/``y_test``.

sketch-rnn: keys ``train``, ``valid``, ``test``, each an object array of stroke-3
sequences (dx, dy, pen_lifted). numpy stores object arrays as a pickle stream; we
never unpickle user files with the general unpickler: a restricted unpickler
rebuilds only plain numpy arrays (``numpy.ndarray``, ``numpy.dtype`` and numpy's
array-reconstruction function), and refuses every other global.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from imgclass.data.sources.base import Chunk, Drawing, LabelFilter, label_from_filename
from imgclass.errors import DataFormatError

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}
SPLIT_KEYS = {"train": "train", "valid": "valid", "test": "test"}


def npz_keys(path: Path) -> list[str]:
    """Array names stored in an ``.npz`` file."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataFormatError(path, f"not a valid .npz (zip) file ({exc})") from None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_npz_array(path: Path, key: str) -> np.ndarray:
    """Read one array from an ``.npz``; object arrays only through the restricted unpickler."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
            raw = io.BytesIO(f.read())
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise DataFormatError(path, f"cannot read array {key!r} ({exc})") from None
    try:
        version = np.lib.format.read_magic(raw)
        if version == (1, 0):
            _shape, _fortran, dtype = np.lib.format.read_array_header_1_0(raw)
        else:
            _shape, _fortran, dtype = np.lib.format.read_array_header_2_0(raw)
        if dtype.hasobject:
            value = _NumpyOnlyUnpickler(raw).load()
            if not isinstance(value, np.ndarray):
                raise ValueError("not an array")
            return value
        raw.seek(0)
        return np.lib.format.read_array(raw, allow_pickle=False)
    except (ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise DataFormatError(
            path, f"array {key!r} is not a readable numpy array ({exc})"
        ) from None


class NpzSource:
    """Labelled bitmaps in an ``.npz``: ``x``/``y``/``classes`` or ``x_train``/``y_train``/..."""

    format = "npz"

    def __init__(
        self,
        path: str | Path,
        *,
        categories: list[str] | None = None,
        per_class: int | None = None,
    ) -> None:
        self.path = str(path)
        self.keys = set(npz_keys(Path(path)))
        self.categories = categories
        self.per_class = per_class
        if not ({"x", "y"} <= self.keys or {"x_train", "y_train"} <= self.keys):
            raise DataFormatError(
                path, f"expected arrays x and y (or x_train and y_train), found {sorted(self.keys)}"
            )

    def classes(self) -> list[str] | None:
        if "classes" in self.keys:
            return [str(c) for c in read_npz_array(Path(self.path), "classes")]
        return None

    def _parts(self) -> list[tuple[str, str, str | None]]:
        if {"x", "y"} <= self.keys:
            return [("x", "y", None)]
        parts: list[tuple[str, str, str | None]] = [("x_train", "y_train", "train")]
        if {"x_test", "y_test"} <= self.keys:
            parts.append(("x_test", "y_test", "test"))
        return parts

    def iter_chunks(self, chunk_size: int = 4096) -> Iterator[Chunk]:
        path = Path(self.path)
        names = self.classes()
        for xkey, ykey, split in self._parts():
            filt = LabelFilter(self.categories, self.per_class)  # per_class counts per split
            x = read_npz_array(path, xkey)
            y = read_npz_array(path, ykey)
            labels = _label_names(path, y, names, xkey, len(x))
            if x.dtype != np.uint8 or x.ndim not in (3, 4):
                raise DataFormatError(
                    path, f"{xkey} must be uint8 (n, H, W[, C]), found {x.dtype} {x.shape}"
                )
            keep = np.fromiter((filt.take(lab) for lab in labels), dtype=bool, count=len(labels))
            idx = np.flatnonzero(keep)
            for start in range(0, len(idx), chunk_size):
                sel = idx[start : start + chunk_size]
                yield Chunk(
                    labels=[labels[i] for i in sel],
                    source=self.path,
                    images=np.ascontiguousarray(x[sel]),
                    split=split,
                    ids=[f"{xkey}:{i}" for i in sel],
                )


def _label_names(
    path: Path, y: np.ndarray, names: list[str] | None, xkey: str, n: int
) -> list[str]:
    if len(y) != n:
        raise DataFormatError(path, f"{len(y)} labels for {n} images in {xkey}")
    if y.dtype.kind in "US":
        return [str(v) for v in y]
    if y.dtype.kind not in "iu":
        raise DataFormatError(path, f"labels must be integers or strings, found {y.dtype}")
    if names is None:
        return [str(int(v)) for v in y]
    if y.size and (y.min() < 0 or y.max() >= len(names)):
        raise DataFormatError(
            path, f"label {int(y.max())} is out of range for {len(names)} classes"
        )
    return [names[int(v)] for v in y]


class SketchRnnSource:
    """sketch-rnn ``<category>.npz``: stroke-3 sequences under ``train``, ``valid``, ``test``."""

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

    def classes(self) -> list[str] | None:
        return [self.label]

    def iter_chunks(self, chunk_size: int = 4096) -> Iterator[Chunk]:
        path = Path(self.path)
        keys = npz_keys(path)
        for key in ("train", "valid", "test"):
            if key not in keys:
                continue
            filt = LabelFilter(self.categories, self.per_class)
            if not filt.wants(self.label):
                return
            sequences = read_npz_array(path, key)
            drawings: list[Drawing] = []
            for i, seq in enumerate(sequences):
                if not filt.take(self.label):
                    break
                drawings.append(stroke3_to_strokes(seq, path, f"{key}[{i}]"))
            for start in range(0, len(drawings), chunk_size):
                part = drawings[start : start + chunk_size]
                yield Chunk(
                    labels=[self.label] * len(part),
                    source=self.path,
                    strokes=part,
                    stroke_kind="raw",
                    split=SPLIT_KEYS[key],
                    ids=[f"{key}:{i}" for i in range(start, start + len(part))],
                )


def stroke3_to_strokes(seq: object, path: Path, where: str) -> Drawing:
    """(n, 3) stroke-3 (dx, dy, pen_lifted) -> absolute strokes, split after each pen lift."""
    arr = np.asarray(seq)
    if arr.ndim != 2 or arr.shape[1] != 3 or len(arr) == 0 or arr.dtype.kind not in "iuf":
        raise DataFormatError(
            path, f"expected a (n, 3) numeric stroke-3 array, found {arr.shape}", where
        )
    xy = np.cumsum(arr[:, :2].astype(np.float64), axis=0).astype(np.float32)
    ends = np.flatnonzero(arr[:, 2] > 0) + 1
    pieces = np.split(xy, ends)
    return [np.ascontiguousarray(p) for p in pieces if len(p)]
