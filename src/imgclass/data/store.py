"""The prepared-dataset store: ``manifest.json`` + ``data.h5``.

``data.h5`` holds one group per split (``train``, ``valid``, ``test``) with
``images`` uint8 (n, H, W[, C]) and ``labels`` int32 (n,), compressed with
Blosc/LZ4 in chunks of whole images along the first axis, so any example can be
read without reading the rest. Drawings, when the source has them, are kept as
``points`` float32 (total points, 2|3), ``stroke_ends`` int64 (cumulative points
per stroke) and ``drawing_ends`` int64 (cumulative strokes per drawing).

The writer builds everything in a temporary sibling folder and renames it into
place at the end, so an interrupted prepare never leaves a complete-looking store.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from imgclass.errors import DatasetError

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
DATA_FILE = "data.h5"
MANIFEST = "manifest.json"
CHUNK_BYTES = 1 << 20  # about 1 MB of images per compressed chunk
CACHE_BYTES = 256 << 20  # decompressed chunks kept by a reader


def chunk_rows(image_shape: Sequence[int]) -> int:
    """Images per compressed chunk: about CHUNK_BYTES, at least 1."""
    return max(1, CHUNK_BYTES // int(np.prod(image_shape)))


def _compression() -> dict[str, Any]:
    return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.NOSHUFFLE))


def manifest_hash(path: str | Path) -> str:
    """sha256 of a prepared dataset's manifest.json (identifies the data a model saw)."""
    return hashlib.sha256((Path(path) / MANIFEST).read_bytes()).hexdigest()


class StoreWriter:
    """Appends examples split by split; ``finish(manifest)`` makes the store appear.

    Use as a context manager: leaving the block with an exception removes the
    temporary folder, so nothing half-written remains.
    """

    def __init__(
        self,
        out: str | Path,
        image_shape: Sequence[int],
        with_strokes: bool = False,
        point_dims: int = 2,
        overwrite: bool = False,
    ) -> None:
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise DatasetError(f"{self.out} already exists; pass --overwrite to replace it")
        self.tmp = self.out.with_name(f".{self.out.name}.partial-{os.getpid()}")
        remove_partials(self.out)
        self.tmp.mkdir(parents=True)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.with_strokes = with_strokes
        self.point_dims = point_dims
        self.file = h5py.File(self.tmp / DATA_FILE, "w")
        self.counts = {s: 0 for s in SPLITS}

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()

    def _group(self, split: str) -> h5py.Group:
        if split in self.file:
            return self.file[split]
        g = self.file.create_group(split)
        rows = chunk_rows(self.image_shape)
        g.create_dataset(
            "images",
            shape=(0, *self.image_shape),
            maxshape=(None, *self.image_shape),
            dtype=np.uint8,
            chunks=(rows, *self.image_shape),
            **_compression(),
        )
        g.create_dataset(
            "labels",
            shape=(0,),
            maxshape=(None,),
            dtype=np.int32,
            chunks=(65536,),
            **_compression(),
        )
        if self.with_strokes:
            g.create_dataset(
                "points",
                shape=(0, self.point_dims),
                maxshape=(None, self.point_dims),
                dtype=np.float32,
                chunks=(65536, self.point_dims),
                **_compression(),
            )
            for name in ("stroke_ends", "drawing_ends"):
                g.create_dataset(
                    name,
                    shape=(0,),
                    maxshape=(None,),
                    dtype=np.int64,
                    chunks=(65536,),
                    **_compression(),
                )
        return g

    def append(
        self,
        split: str,
        images: np.ndarray,
        labels: np.ndarray,
        drawings: Sequence[Sequence[np.ndarray]] | None = None,
    ) -> None:
        """Add examples to a split. images: uint8 (n, *image_shape); labels: class indices."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        if images.shape[1:] != self.image_shape:
            raise ValueError(f"image shape {images.shape[1:]} != {self.image_shape}")
        g = self._group(split)
        _extend(g["images"], images)
        _extend(g["labels"], np.asarray(labels, dtype=np.int32))
        if self.with_strokes:
            if drawings is None or len(drawings) != len(images):
                raise ValueError("a store with strokes needs one drawing per image")
            self._append_drawings(g, drawings)
        self.counts[split] += len(images)

    def _append_drawings(self, g: h5py.Group, drawings: Sequence[Sequence[np.ndarray]]) -> None:
        strokes = [
            np.asarray(s, dtype=np.float32)[:, : self.point_dims] for d in drawings for s in d
        ]
        points_before = g["points"].shape[0]
        strokes_before = g["stroke_ends"].shape[0]
        lengths = np.array([len(s) for s in strokes], dtype=np.int64)
        per_drawing = np.array([len(d) for d in drawings], dtype=np.int64)
        padded = [_pad_columns(s, self.point_dims) for s in strokes]
        _extend(
            g["points"],
            np.concatenate(padded) if padded else np.zeros((0, self.point_dims), np.float32),
        )
        _extend(g["stroke_ends"], points_before + np.cumsum(lengths))
        _extend(g["drawing_ends"], strokes_before + np.cumsum(per_drawing))

    def finish(self, manifest: dict[str, Any]) -> Path:
        """Write the manifest and move the store into place; returns its path."""
        self.file.close()
        with open(self.tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=False)
            f.write("\n")
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.tmp, self.out)
        return self.out

    def abort(self) -> None:
        try:
            self.file.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _pad_columns(stroke: np.ndarray, dims: int) -> np.ndarray:
    if stroke.shape[1] == dims:
        return stroke
    out = np.zeros((len(stroke), dims), dtype=np.float32)
    out[:, : stroke.shape[1]] = stroke
    return out


def _extend(dset: h5py.Dataset, values: np.ndarray) -> None:
    n = dset.shape[0]
    dset.resize(n + len(values), axis=0)
    dset[n:] = values


def remove_partials(out: Path) -> None:
    """Remove leftovers of interrupted prepares of ``out`` (``.<name>.partial-<pid>``)."""
    if out.parent.exists():
        for leftover in out.parent.glob(f".{out.name}.partial-*"):
            shutil.rmtree(leftover, ignore_errors=True)


class LazyImages:
    """Array-like view of one split's images: slices and integer index arrays read only
    the chunks they touch (through the dataset's chunk cache)."""

    def __init__(self, ds: PreparedDataset, split: str) -> None:
        self.ds = ds
        self.split = split
        self.dset = ds._dset(split, "images")
        self.shape = self.dset.shape
        self.dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            return self.ds._gather(self.split, np.arange(len(self))[key])
        if isinstance(key, (int, np.integer)):
            return self.ds._gather(self.split, np.array([int(key)]))[0]
        return self.ds._gather(self.split, np.asarray(key, dtype=np.int64))


class PreparedDataset:
    """Reads a prepared dataset; see docs/internals.md for the API."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.classes: list[str] = list(manifest["classes"])
        self.image_shape = tuple(manifest["image_shape"])
        self.recipe: dict[str, Any] = manifest.get("recipe", {})
        self.has_strokes = bool(manifest.get("has_strokes"))
        self.file = h5py.File(path / DATA_FILE, "r")
        self.splits = [s for s in SPLITS if s in self.file and self.file[s]["labels"].shape[0] > 0]
        self._labels: dict[str, np.ndarray] = {}
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._rows = chunk_rows(self.image_shape)

    @classmethod
    def open(cls, path: str | Path) -> PreparedDataset:
        path = Path(path)
        if not (path / MANIFEST).exists() or not (path / DATA_FILE).exists():
            raise DatasetError(
                f"{path} is not a prepared dataset (no {MANIFEST} and {DATA_FILE}); "
                "make one with `imgclass data prepare`"
            )
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path / MANIFEST} is not valid JSON ({exc})") from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise DatasetError(
                f"{path}: unsupported store version {manifest.get('format_version')}"
            )
        return cls(path, manifest)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> PreparedDataset:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _dset(self, split: str, name: str) -> h5py.Dataset:
        if split not in self.file:
            raise DatasetError(
                f"{self.path} has no {split!r} split (it has {', '.join(self.splits)})"
            )
        return self.file[split][name]

    def size(self, split: str) -> int:
        return int(self.file[split]["labels"].shape[0]) if split in self.file else 0

    def labels(self, split: str) -> np.ndarray:
        if split not in self._labels:
            self._labels[split] = self._dset(split, "labels")[:].astype(np.int64)
        return self._labels[split]

    def images(self, split: str) -> LazyImages:
        return LazyImages(self, split)

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """All images and labels of a split in memory."""
        return self._dset(split, "images")[:], self.labels(split)

    def strokes(self, split: str, i: int) -> list[np.ndarray]:
        """Drawing ``i`` of a split as a list of float32 (n_points, 2|3) strokes."""
        if not self.has_strokes:
            raise DatasetError(f"{self.path} holds no strokes")
        g = self.file[split]
        first = int(g["drawing_ends"][i - 1]) if i > 0 else 0
        last = int(g["drawing_ends"][i])
        ends = g["stroke_ends"][max(0, first - 1) : last]
        start = int(ends[0]) if first > 0 else 0
        bounds = ends[1:] if first > 0 else ends
        points = g["points"][start : int(bounds[-1])]
        return np.split(points, np.asarray(bounds[:-1]) - start)

    # --- chunked reading ------------------------------------------------------------

    def _chunk(self, split: str, c: int) -> np.ndarray:
        key = (split, c)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        block = self._dset(split, "images")[c * self._rows : (c + 1) * self._rows]
        self._cache[key] = block
        max_chunks = max(2, CACHE_BYTES // max(1, block.nbytes))
        while len(self._cache) > max_chunks:
            self._cache.popitem(last=False)
        return block

    def _gather(self, split: str, idx: np.ndarray) -> np.ndarray:
        n = self.size(split)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for {split!r} of size {n}")
        idx = np.where(idx < 0, idx + n, idx)
        out = np.empty((len(idx), *self.image_shape), dtype=np.uint8)
        chunks = idx // self._rows
        for c in np.unique(chunks):
            sel = np.flatnonzero(chunks == c)
            out[sel] = self._chunk(split, int(c))[idx[sel] - c * self._rows]
        return out

    def iter_batches(
        self,
        split: str,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        window: int = 8,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Batches (images, labels, indices) covering the split once.

        With ``shuffle``, the order is random at two levels, with bounded memory:
        chunks are visited in a random order, ``window`` chunks at a time, and the
        examples of each window are shuffled together. The store was shuffled across
        classes when written, so every chunk already mixes classes.
        """
        labels = self.labels(split)
        dset = self._dset(split, "images")
        rows = self._rows
        pending_x = np.zeros((0, *self.image_shape), dtype=np.uint8)
        pending_i = np.zeros(0, dtype=np.int64)
        for window_chunks in self._windows(split, shuffle, seed, window):
            # Decompress the window's chunks once, then gather every batch from memory.
            parts = [dset[c * rows : (c + 1) * rows] for c in window_chunks]
            index = np.concatenate(
                [
                    np.arange(c * rows, c * rows + len(p))
                    for c, p in zip(window_chunks, parts, strict=True)
                ]
            )
            block = np.concatenate(parts)
            if shuffle:
                perm = self._rng.permutation(len(block))
                block, index = block[perm], index[perm]
            block = np.concatenate([pending_x, block])
            index = np.concatenate([pending_i, index])
            full = len(block) // batch_size * batch_size
            for start in range(0, full, batch_size):
                idx = index[start : start + batch_size]
                yield block[start : start + batch_size], labels[idx], idx
            pending_x, pending_i = block[full:], index[full:]
        if len(pending_i) and not drop_last:
            yield pending_x, labels[pending_i], pending_i

    def _windows(self, split: str, shuffle: bool, seed: int, window: int) -> Iterator[np.ndarray]:
        n_chunks = -(-self.size(split) // self._rows)
        self._rng = np.random.default_rng(seed)
        order = self._rng.permutation(n_chunks) if shuffle else np.arange(n_chunks)
        for w in range(0, n_chunks, window):
            yield order[w : w + window]

    def batch_indices(
        self,
        split: str,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        window: int = 8,
    ) -> Iterator[np.ndarray]:
        """The index arrays that ``iter_batches`` yields, without reading images."""
        rows, n = self._rows, self.size(split)
        pending = np.zeros(0, dtype=np.int64)
        for window_chunks in self._windows(split, shuffle, seed, window):
            index = np.concatenate(
                [np.arange(c * rows, min(n, (c + 1) * rows)) for c in window_chunks]
            )
            if shuffle:
                index = index[self._rng.permutation(len(index))]
            block = np.concatenate([pending, index])
            full = len(block) // batch_size * batch_size
            for start in range(0, full, batch_size):
                yield block[start : start + batch_size]
            pending = block[full:]
        if len(pending) and not drop_last:
            yield pending

    def nbytes_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
