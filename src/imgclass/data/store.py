"""The prepared-dataset store: ``manifest.json`` + ``data.h5``.

``data.h5`` holds one group per split (``train``, ``valid``, ``test``) with
``images`` uint8 (n, H, W[, C]) and ``labels`` int32 (n,), compressed with
Blosc/LZ4 in chunks of whole images along the first axis (about 1 MB each), so any
example can be read without reading the rest. Drawings, when the source has them,
are kept as ``points`` float32 (total points, 2 or 3: x, y[, t ms]), ``stroke_ends``
int64 (cumulative points per stroke) and ``drawing_ends`` int64 (cumulative strokes
per drawing), so drawing ``i`` is two offset look-ups and one slice away.

The writer builds everything in a hidden sibling folder ``.<name>.partial-<pid>``
and renames it into place at the end, after the manifest is written, so an
interrupted prepare never leaves a complete-looking store; the next prepare of the
same output removes such leftovers.
"""

from __future__ import annotations

import hashlib
import json
import logging
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

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
DATA_FILE = "data.h5"
MANIFEST = "manifest.json"
CHUNK_BYTES = 1 << 20  # about 1 MB of images per compressed chunk
CACHE_BYTES = 256 << 20  # decompressed image chunks kept by a reader for random access
HDF5_CACHE_BYTES = 16 << 20  # HDF5's own chunk cache (labels, strokes)
OFFSET_ROWS = 65536  # rows per chunk of labels and stroke offsets/points


def chunk_rows(image_shape: Sequence[int]) -> int:
    """Images per compressed chunk: about CHUNK_BYTES, at least 1."""
    return max(1, CHUNK_BYTES // int(np.prod(image_shape)))


def _compression() -> dict[str, Any]:
    # LZ4 without byte shuffling: measured on Quick, Draw! bitmaps it compresses
    # about as well as Zstd level 1 here and decompresses several times faster.
    return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.NOSHUFFLE))


def manifest_hash(path: str | Path) -> str:
    """sha256 of a prepared dataset's manifest.json (identifies the data a model saw)."""
    return hashlib.sha256((Path(path) / MANIFEST).read_bytes()).hexdigest()


# --- writing -------------------------------------------------------------------------


class StoreWriter:
    """Appends examples split by split; ``finish(manifest)`` makes the store appear.

    Use as a context manager: leaving the block with an exception (including
    KeyboardInterrupt) removes the temporary folder, so nothing half-written remains.
    ``point_dims`` (2 for x, y; 3 with time) is taken from the first drawings
    appended when not given.
    """

    def __init__(
        self,
        out: str | Path,
        image_shape: Sequence[int],
        with_strokes: bool = False,
        point_dims: int | None = None,
        overwrite: bool = False,
    ) -> None:
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise DatasetError(f"{self.out} already exists; pass --overwrite to replace it")
        if self.out.exists() and not self.out.is_dir():
            raise DatasetError(f"{self.out} exists and is not a folder")
        remove_partials(self.out)
        self.tmp = self.out.with_name(f".{self.out.name}.partial-{os.getpid()}")
        self.tmp.mkdir(parents=True)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.with_strokes = with_strokes
        self.point_dims = point_dims
        self.file = h5py.File(self.tmp / DATA_FILE, "w")
        self.counts = dict.fromkeys(SPLITS, 0)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()

    def _group(self, split: str) -> h5py.Group:
        if split in self.file:
            return self.file[split]
        g = self.file.create_group(split)
        _create(g, "images", self.image_shape, np.uint8, chunk_rows(self.image_shape))
        _create(g, "labels", (), np.int32)
        if self.with_strokes:
            _create(g, "points", (self.point_dims or 2,), np.float32)
            _create(g, "stroke_ends", (), np.int64)
            _create(g, "drawing_ends", (), np.int64)
        return g

    def append(
        self,
        split: str,
        images: np.ndarray,
        labels: np.ndarray,
        drawings: Sequence[Sequence[np.ndarray]] | None = None,
    ) -> None:
        """Add examples to a split.

        images: uint8 array of shape (n, *image_shape); labels: class indices (n,);
        drawings: n drawings (lists of (n_points, 2|3) strokes) when the store keeps strokes.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        if images.shape[1:] != self.image_shape:
            raise ValueError(f"image shape {images.shape[1:]} != {self.image_shape}")
        if self.with_strokes and (drawings is None or len(drawings) != len(images)):
            raise ValueError("a store with strokes needs one drawing per image")
        if self.with_strokes and self.point_dims is None:
            self.point_dims = max((s.shape[1] for d in drawings or [] for s in d), default=2)
        g = self._group(split)
        _extend(g["images"], images)
        _extend(g["labels"], np.asarray(labels, dtype=np.int32))
        if self.with_strokes and drawings is not None:
            self._append_drawings(g, drawings)
        self.counts[split] += len(images)

    def _append_drawings(self, g: h5py.Group, drawings: Sequence[Sequence[np.ndarray]]) -> None:
        dims = int(g["points"].shape[1])
        strokes = [_fit_columns(np.asarray(s, dtype=np.float32), dims) for d in drawings for s in d]
        lengths = np.array([len(s) for s in strokes], dtype=np.int64)
        per_drawing = np.array([len(d) for d in drawings], dtype=np.int64)
        points_before = g["stroke_ends"][-1] if g["stroke_ends"].shape[0] else 0
        strokes_before = g["stroke_ends"].shape[0]
        _extend(g["points"], np.concatenate(strokes) if strokes else np.zeros((0, dims), "f4"))
        _extend(g["stroke_ends"], points_before + np.cumsum(lengths))
        _extend(g["drawing_ends"], strokes_before + np.cumsum(per_drawing))

    def finish(self, manifest: dict[str, Any]) -> Path:
        """Write the manifest last and move the store into place; returns its path."""
        self.file.close()
        with open(self.tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
        old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
        if self.out.exists():  # --overwrite: swap, then delete the old store
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        shutil.rmtree(old, ignore_errors=True)
        return self.out

    def abort(self) -> None:
        """Close and delete the temporary folder."""
        try:
            self.file.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _create(g: h5py.Group, name: str, row: tuple[int, ...], dtype: Any, rows: int = 0) -> None:
    g.create_dataset(
        name,
        shape=(0, *row),
        maxshape=(None, *row),
        dtype=dtype,
        chunks=(rows or OFFSET_ROWS, *row),
        **_compression(),
    )


def _fit_columns(stroke: np.ndarray, dims: int) -> np.ndarray:
    """A stroke with exactly ``dims`` columns: extra ones dropped, missing times set to 0."""
    if stroke.shape[1] == dims:
        return stroke
    if stroke.shape[1] > dims:
        return stroke[:, :dims]
    out = np.zeros((len(stroke), dims), dtype=np.float32)
    out[:, : stroke.shape[1]] = stroke
    return out


def _extend(dset: h5py.Dataset, values: np.ndarray) -> None:
    n = dset.shape[0]
    dset.resize(n + len(values), axis=0)
    dset[n:] = values


def remove_partials(out: Path) -> None:
    """Remove what interrupted prepares of ``out`` left behind (``.<name>.partial-<pid>``,
    ``.<name>.old-<pid>``), except the folders of prepares that are still running."""
    if not out.parent.exists():
        return
    for pattern in (f".{out.name}.partial-*", f".{out.name}.old-*"):
        for leftover in out.parent.glob(pattern):
            pid = leftover.name.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                continue
            log.info("removing %s, left by an interrupted prepare", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- reading -------------------------------------------------------------------------


class LazyImages:
    """Array-like view of one split's images: slices and integer index arrays (sorted or
    not, repeats allowed) read only the chunks they touch, through the dataset's cache."""

    def __init__(self, ds: PreparedDataset, split: str) -> None:
        self.ds = ds
        self.split = split
        self.shape: tuple[int, ...] = tuple(ds._dset(split, "images").shape)
        self.dtype = np.dtype(np.uint8)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            return self.ds._gather(self.split, np.arange(len(self))[key])
        if isinstance(key, (int, np.integer)):
            return self.ds._gather(self.split, np.array([int(key)]))[0]
        return self.ds._gather(self.split, np.asarray(key, dtype=np.int64))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self.ds._dset(self.split, "images")[:]
        return whole if dtype is None else whole.astype(dtype)


class PreparedDataset:
    """Reads a prepared dataset (see docs/internals.md for the contract).

    Random access goes through an LRU cache of decompressed image chunks;
    ``iter_batches`` reads whole chunks in a shuffled order instead, which is what
    makes shuffled training batches about as fast as indexing an in-memory array.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.classes: list[str] = list(manifest["classes"])
        self.image_shape = tuple(int(v) for v in manifest["image_shape"])
        self.recipe: dict[str, Any] = manifest.get("recipe", {})
        self.has_strokes = bool(manifest.get("has_strokes"))
        try:
            self.file = h5py.File(path / DATA_FILE, "r", rdcc_nbytes=HDF5_CACHE_BYTES)
        except OSError as exc:
            raise DatasetError(f"{path / DATA_FILE} cannot be read ({exc})") from None
        self.splits = [s for s in SPLITS if self.size(s) > 0]
        self._labels: dict[str, np.ndarray] = {}
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._rows = chunk_rows(self.image_shape)

    @classmethod
    def open(cls, path: str | Path) -> PreparedDataset:
        """Open the store at ``path``; DatasetError when missing, incomplete or too new."""
        path = Path(path)
        if not (path / MANIFEST).is_file() or not (path / DATA_FILE).is_file():
            raise DatasetError(
                f"{path} is not a prepared dataset (no {MANIFEST} and {DATA_FILE}); "
                "make one with `imgclass data prepare`"
            )
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{path / MANIFEST} is not valid JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
            version = manifest.get("format_version") if isinstance(manifest, dict) else None
            raise DatasetError(
                f"{path / MANIFEST}: store format version {version!r} is not {FORMAT_VERSION}; "
                "prepare the dataset again with this imgclass"
            )
        for key in ("classes", "image_shape"):
            if key not in manifest:
                raise DatasetError(f"{path / MANIFEST}: the field {key!r} is missing")
        return cls(path, manifest)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> PreparedDataset:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _dset(self, split: str, name: str) -> h5py.Dataset:
        if split not in self.file:
            have = ", ".join(self.splits) or "none"
            raise DatasetError(f"{self.path} has no {split!r} split (it has {have})")
        return self.file[split][name]

    def size(self, split: str) -> int:
        """Number of examples in ``split`` (0 when absent)."""
        return int(self.file[split]["labels"].shape[0]) if split in self.file else 0

    def labels(self, split: str) -> np.ndarray:
        """Class indices into ``classes``: int64 array of shape (n,)."""
        if split not in self._labels:
            self._labels[split] = self._dset(split, "labels")[:].astype(np.int64)
        return self._labels[split]

    def images(self, split: str) -> LazyImages:
        """Lazy uint8 array-like of shape (n, H, W[, C])."""
        return LazyImages(self, split)

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """All images, uint8 (n, H, W[, C]), and labels, int64 (n,), of a split in memory."""
        return self._dset(split, "images")[:], self.labels(split)

    def strokes(self, split: str, i: int) -> list[np.ndarray]:
        """Drawing ``i`` of a split: a list of float32 (n_points, 2|3) strokes."""
        if not self.has_strokes:
            raise DatasetError(f"{self.path} holds no strokes")
        g = self._dset(split, "drawing_ends").parent
        n = self.size(split)
        if not -n <= i < n:
            raise IndexError(f"drawing {i} out of range for {split!r} of size {n}")
        i = i + n if i < 0 else i
        first = int(g["drawing_ends"][i - 1]) if i > 0 else 0
        last = int(g["drawing_ends"][i])
        if last == first:
            return []
        ends = g["stroke_ends"][max(0, first - 1) : last]
        start = int(ends[0]) if first > 0 else 0
        bounds = ends[1:] if first > 0 else ends
        points = g["points"][start : int(bounds[-1])]
        return np.split(points, np.asarray(bounds[:-1]) - start)

    def nbytes_on_disk(self) -> int:
        """Size of the store's files in bytes."""
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    def all_strokes(self, split: str) -> list[list[np.ndarray]]:
        """Every drawing of a split (one read of each array; for training sequence models).

        Simplified stores give (n, 2) strokes; raw ones (n, 3) with time."""
        if not self.has_strokes:
            raise DatasetError(
                f"{self.path} holds no strokes; prepare it from ndjson, .bin or sketch-rnn files"
            )
        g = self.file[split]
        points = g["points"][:]
        if self.manifest.get("stroke_kind") != "raw":
            points = points[:, :2]
        strokes = np.split(points, g["stroke_ends"][:-1])
        ends = g["drawing_ends"][:]
        starts = np.concatenate([[0], ends[:-1]])
        return [strokes[a:b] for a, b in zip(starts, ends, strict=True)]

    # --- chunked reading -------------------------------------------------------------

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

    def _windows(
        self, split: str, shuffle: bool, seed: int, window: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per window of ``window`` chunks: (chunk numbers, example indices in the order
        they are served, their positions in the window's concatenated chunks).

        Chunks come in a seeded random order and the examples of each window are
        shuffled together; only one window is ever decompressed at a time.
        """
        rows, n = self._rows, self.size(split)
        rng = np.random.default_rng(seed)
        n_chunks = -(-n // rows)
        order = rng.permutation(n_chunks) if shuffle else np.arange(n_chunks)
        for w in range(0, n_chunks, window):
            chunks = order[w : w + window]
            index = np.concatenate([np.arange(c * rows, min(n, (c + 1) * rows)) for c in chunks])
            positions = rng.permutation(len(index)) if shuffle else np.arange(len(index))
            yield chunks, index[positions], positions

    def batch_indices(
        self,
        split: str,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        window: int = 8,
    ) -> Iterator[np.ndarray]:
        """The index arrays, int64 (b,), that ``iter_batches`` yields, without reading images."""
        pieces = ((index, index) for _, index, _ in self._windows(split, shuffle, seed, window))
        for _, index in _rebatch(pieces, batch_size, drop_last):
            yield index

    def iter_batches(
        self,
        split: str,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        window: int = 8,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Batches covering the split once: (images uint8 (b, H, W[, C]), labels int64 (b,),
        indices int64 (b,)).

        With ``shuffle`` the order is random at two levels with bounded memory (about
        ``window`` MB decompressed): chunks in a random order, ``window`` at a time, and
        the examples of each window shuffled together. The store was shuffled across
        classes when written, so every chunk already mixes classes. Same seed, same order.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        labels = self.labels(split)
        dset = self._dset(split, "images")
        rows = self._rows

        def pieces() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for chunks, index, positions in self._windows(split, shuffle, seed, window):
                block = np.concatenate([dset[c * rows : (c + 1) * rows] for c in chunks])
                yield block[positions], index

        for images, index in _rebatch(pieces(), batch_size, drop_last):
            yield images, labels[index], index


def _rebatch(
    pieces: Iterator[tuple[np.ndarray, np.ndarray]], batch_size: int, drop_last: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Regroup a stream of (values, indices) pieces of any length into batches of
    ``batch_size``; only a batch's worth of values is ever copied across pieces."""
    rest: tuple[np.ndarray, np.ndarray] | None = None
    for values, index in pieces:
        start = 0
        if rest is not None:
            start = batch_size - len(rest[1])
            rest = (
                np.concatenate([rest[0], values[:start]]),
                np.concatenate([rest[1], index[:start]]),
            )
            if len(rest[1]) < batch_size:
                continue
            yield rest
            rest = None
        stop = start + (len(index) - start) // batch_size * batch_size
        for s in range(start, stop, batch_size):
            yield values[s : s + batch_size], index[s : s + batch_size]
        if stop < len(index):
            rest = (values[stop:], index[stop:])
    if rest is not None and not drop_last:
        yield rest
