"""``.npz`` files of labelled bitmaps, read without pickle and with bounded memory.

Two layouts: ``x`` (n, H, W[, 3]) uint8 with ``y`` (n,) integer codes and optionally
``classes`` (k,) str (like the files in ../shared/data); or MNIST style
``x_train``/``y_train`` (and ``x_valid``/``y_valid``, ``x_test``/``y_test``), where
the key names the split. Without ``classes``, integer labels are named by their
value (``"0".."9"`` for MNIST); string labels are used as they are.

Only the (small) label arrays are read whole, within ``ReadLimits.max_array_bytes``;
images stream from the zip member a chunk of rows at a time (at most
``ReadLimits.chunk_bytes``), so a many-gigabyte file needs one chunk of memory. What
the headers declare is checked before any data is read: each member's shape against
its zip entry's size, pixels per image, how far the images inflate (a zip bomb), and
one label per image.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from imgclass.data.limits import DEFAULT_LIMITS, ReadLimits
from imgclass.data.sources.base import OWN_SPLITS_FIRST, Chunk, Reader
from imgclass.data.sources.fileio import read_array, read_npy_header
from imgclass.errors import DataFormatError

SPLIT_NAMES = ("train", "valid", "test")


def npz_keys(path: str | Path) -> list[str]:
    """Array names stored in an ``.npz`` file."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataFormatError(path, f"not a valid .npz (zip) file ({exc})") from None


@contextmanager
def open_member(
    path: str | Path, key: str
) -> Iterator[tuple[IO[bytes], tuple[int, ...], np.dtype[Any], zipfile.ZipInfo]]:
    """Open array ``key`` of an ``.npz`` as a stream positioned at its data.

    Yields (stream, shape, dtype, zip entry). Fortran-ordered arrays are refused, and
    so is a shape that needs more bytes than the zip entry says it holds (checked
    before any data is read); object arrays are left to the caller to refuse (nothing
    here unpickles).
    """
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
            info = zf.getinfo(f"{key}.npy")
            shape, fortran, dtype = read_npy_header(f, path, f"array {key!r}")
            if fortran and len(shape) > 1:
                raise DataFormatError(path, f"array {key!r} is Fortran-ordered; save it C-ordered")
            needed = f.tell() + math.prod(shape) * dtype.itemsize
            if not dtype.hasobject and info.file_size < needed:
                raise DataFormatError(
                    path,
                    f"array {key!r} is cut short: shape {shape} needs {needed} bytes, "
                    f"the file holds {info.file_size}",
                )
            yield f, shape, dtype, info
    except (zipfile.BadZipFile, zlib.error, KeyError, OSError, EOFError) as exc:
        raise DataFormatError(path, f"cannot read array {key!r} ({exc})") from None


def read_small_array(path: str | Path, key: str, limits: ReadLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Read a whole non-object array (labels, class names) without pickle, its declared
    size checked against ``limits.max_array_bytes`` first."""
    with open_member(path, key) as (f, shape, dtype, _):
        if dtype.hasobject:
            raise DataFormatError(
                path, f"array {key!r} holds Python objects (pickle); save it as numbers or str"
            )
        limits.check_array_bytes(path, math.prod(shape) * dtype.itemsize, f"array {key!r}")
        return read_array(f, shape, dtype, path, f"array {key!r}", "array data")


def iter_rows(
    path: str | Path, key: str, rows: int, stop: int, limits: ReadLimits = DEFAULT_LIMITS
) -> Iterator[tuple[int, np.ndarray]]:
    """(start, rows of ``key``) a block at a time, up to row ``stop``: at most ``rows``
    rows and at most ``limits.chunk_bytes`` (but one row) each."""
    with open_member(path, key) as (f, shape, dtype, _):
        rows = limits.rows_per_chunk(math.prod(shape[1:]) * dtype.itemsize, rows)
        for start in range(0, min(stop, shape[0]), rows):
            count = min(rows, stop - start, shape[0] - start)
            where = f"array {key!r}, row {start}"
            yield start, read_array(f, (count, *shape[1:]), dtype, path, where, "data")


class NpzSource(Reader):
    """Labelled bitmaps in an ``.npz``; chunks hold ``images`` uint8 (k, H, W[, 3])."""

    format = "npz"

    def __init__(
        self,
        path: str | Path,
        *,
        categories: list[str] | None = None,
        per_class: int | None = None,
        limits: ReadLimits | None = None,
    ) -> None:
        super().__init__(path, categories=categories, per_class=per_class, limits=limits)
        self.keys = set(npz_keys(path))
        self.parts = self._parts()
        self._names = self._class_names()

    def _parts(self) -> list[tuple[str, str, str | None]]:
        if {"x", "y"} <= self.keys:
            return [("x", "y", None)]
        parts: list[tuple[str, str, str | None]] = [
            (f"x_{s}", f"y_{s}", s) for s in OWN_SPLITS_FIRST if {f"x_{s}", f"y_{s}"} <= self.keys
        ]
        if not parts:
            raise DataFormatError(
                self.path,
                f"expected arrays x and y (or x_train and y_train), found {sorted(self.keys)}",
            )
        return parts

    def _class_names(self) -> list[str] | None:
        if "classes" not in self.keys:
            return None
        names = read_small_array(self.path, "classes", self.limits)
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataFormatError(self.path, f"classes must be (k,) str, found {names.dtype}")
        return [str(c) for c in names]

    def classes(self) -> list[str] | None:
        return list(self._names) if self._names is not None else None

    def iter_chunks(self, chunk_size: int = 4096) -> Iterator[Chunk]:
        for xkey, ykey, split in self.parts:
            self._check_part(xkey, ykey)
            y = read_small_array(self.path, ykey, self.limits)
            codes, names = label_codes(self.path, y, self._names)
            keep = keep_mask(codes, names, self.categories, self.per_class)
            stop = int(np.flatnonzero(keep)[-1]) + 1 if keep.any() else 0
            for start, x in iter_rows(self.path, xkey, chunk_size, stop, self.limits):
                sel = np.flatnonzero(keep[start : start + len(x)])
                if len(sel):
                    yield Chunk(
                        labels=[names[c] for c in codes[start + sel]],
                        source=self.path,
                        # x is fresh and contiguous: a copy only when rows are left out
                        images=x if len(sel) == len(x) else x[sel],
                        split=split,
                        ids=[f"{xkey}:{start + i}" for i in sel],
                    )

    def _check_part(self, xkey: str, ykey: str) -> None:
        """Check what the headers of images and labels declare before reading either: the
        images' type and shape, pixels per image, how far they inflate, and one label
        per image."""
        with open_member(self.path, xkey) as (_, shape, dtype, info):
            pass
        if dtype != np.uint8 or not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 3)):
            raise DataFormatError(
                self.path,
                f"{xkey} must be uint8 (n, H, W) or (n, H, W, 3), found {dtype} {shape}",
            )
        self.limits.check_pixels(self.path, shape[2], shape[1], f"images in {xkey}")
        self.limits.check_ratio(self.path, info.file_size, info.compress_size, f"array {xkey!r}")
        with open_member(self.path, ykey) as (_, yshape, _, _):
            pass
        if len(yshape) != 1:
            raise DataFormatError(self.path, f"labels must be a (n,) array, found shape {yshape}")
        if yshape[0] != shape[0]:
            raise DataFormatError(self.path, f"{yshape[0]} labels for {shape[0]} images in {xkey}")


def label_codes(
    path: str | Path, y: np.ndarray, names: list[str] | None
) -> tuple[np.ndarray, list[str]]:
    """Labels -> (int64 codes (n,), class names): codes index the names."""
    if y.ndim != 1:
        raise DataFormatError(path, f"labels must be a (n,) array, found shape {y.shape}")
    if y.dtype.kind in "US":
        values, codes = np.unique(y, return_inverse=True)
        return codes.astype(np.int64), [str(v) for v in values]
    if y.dtype.kind not in "iu":
        raise DataFormatError(path, f"labels must be integers or strings, found {y.dtype}")
    if names is None:
        values, codes = np.unique(y, return_inverse=True)
        return codes.astype(np.int64), [str(int(v)) for v in values]
    if y.size and (y.min() < 0 or y.max() >= len(names)):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise DataFormatError(path, f"label {bad} is out of range for {len(names)} classes")
    return y.astype(np.int64), names


def keep_mask(
    codes: np.ndarray, names: list[str], categories: list[str] | None, per_class: int | None
) -> np.ndarray:
    """bool (n,): the examples of wanted classes, at most ``per_class`` each, first first."""
    keep = np.ones(len(codes), dtype=bool)
    if categories is not None:
        wanted = [i for i, name in enumerate(names) if name in set(categories)]
        keep = np.isin(codes, wanted)
    if per_class is not None:
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        first = np.searchsorted(sorted_codes, sorted_codes, side="left")
        rank = np.empty(len(codes), dtype=np.int64)
        rank[order] = np.arange(len(codes)) - first
        keep &= rank < per_class
    return keep
