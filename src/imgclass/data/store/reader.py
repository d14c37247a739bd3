"""The prepared-dataset store: ``manifest.json`` + ``data.h5``.

``data.h5`` holds one group per split (``train``, ``valid``, ``test``) with
``images`` uint8 (n, H, W[, C]) and ``labels`` int32 (n,), compressed with
Blosc/LZ4 in chunks of whole images along the first axis (about 1 MB each), so any
example can be read without reading the rest. Drawings, when the source has them,
are kept as ``points`` float32 (total points, 2 or 3: x, y[, t ms]), ``stroke_ends``
int64 (cumulative points per stroke) and ``drawing_ends`` int64 (cumulative strokes
per drawing), so drawing ``i`` is two offset look-ups and one slice away.

Image chunks are compressed and decompressed by numcodecs' Blosc, outside HDF5's
filter pipeline (``write_direct_chunk`` / ``read_direct_chunk``) but in exactly the
format of the HDF5 Blosc filter, so any h5py with hdf5plugin reads the file as usual.
numcodecs releases the GIL: chunks are compressed on several cores while preparing,
and the next window of chunks is decompressed in the background while batches of the
current one are served.

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
from collections import OrderedDict, deque
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import hdf5plugin
import numcodecs.blosc as blosc
import numpy as np

from imgclass.atomic import process_alive
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
DECODE_THREADS = 2  # background threads decompressing chunks and gathering batches
WINDOW_BYTES = 16 << 20  # decompressed images shuffled together by iter_batches
AHEAD = 2  # iter_batches serves the batches of window k while it plans window k + AHEAD
PIPELINE_DEPTH = 4  # window buffers in use at most (more only for batches spanning windows)
BLOSC_FILTER = "32001"  # HDF5's registered id of the Blosc filter
CNAME: Literal["lz4"] = "lz4"  # Blosc codec...
CLEVEL, SHUFFLE = 5, 0  # ...its level, and no shuffling (the values are bytes already)


def chunk_rows(image_shape: Sequence[int]) -> int:
    """Images per compressed chunk: about CHUNK_BYTES, at least 1."""
    return max(1, CHUNK_BYTES // int(np.prod(image_shape)))


def _compression() -> dict[str, Any]:
    # LZ4 without shuffling: on Quick, Draw! bitmaps it decompresses at about 3 GB/s on
    # one core, 2-3x faster than Zstd level 1, for files about 1.4x larger.
    return dict(hdf5plugin.Blosc(cname=CNAME, clevel=CLEVEL, shuffle=SHUFFLE))


def _encode(block: np.ndarray) -> bytes:
    """One full image chunk, compressed as HDF5's Blosc filter would."""
    return bytes(blosc.compress(np.ascontiguousarray(block), CNAME.encode(), CLEVEL, SHUFFLE))


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
        self.rows = chunk_rows(self.image_shape)
        self.tails: dict[str, np.ndarray] = {}  # images short of a whole chunk, per split
        self.pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))
        self.pending: deque[tuple[h5py.Dataset, tuple[int, ...], Future[bytes]]] = deque()

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
        order: np.ndarray | None = None,
        wait: bool = True,
    ) -> None:
        """Add examples to a split.

        images: uint8 array of shape (m, *image_shape); the examples added are
        ``images[order]`` (all of them, in order, when ``order`` is None), gathered chunk
        by chunk by the compressing threads. With ``wait=False`` this returns while they
        work: keep ``images`` unchanged until ``drain()`` has returned. labels: their
        class indices (n,);
        drawings: their n drawings (lists of (n_points, 2|3) strokes) when the store
        keeps strokes.
        """
        n = len(images) if order is None else len(order)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        if images.shape[1:] != self.image_shape or len(labels) != n:
            raise ValueError(
                f"{n} images of shape {images.shape[1:]} (expected {self.image_shape}) "
                f"for {len(labels)} labels"
            )
        if self.with_strokes and (drawings is None or len(drawings) != n):
            raise ValueError("a store with strokes needs one drawing per image")
        if self.with_strokes and self.point_dims is None:
            self.point_dims = max((s.shape[1] for d in drawings or [] for s in d), default=2)
        g = self._group(split)
        self._append_images(split, g["images"], images, order)
        _extend(g["labels"], np.asarray(labels, dtype=np.int32))
        if self.with_strokes and drawings is not None:
            self._append_drawings(g, drawings)
        self.counts[split] += n
        if wait:
            self.drain()

    def _append_images(
        self, split: str, dset: h5py.Dataset, images: np.ndarray, order: np.ndarray | None
    ) -> None:
        """Compress and write the whole chunks (in parallel); keep the rest for later."""
        if order is None:
            order = np.arange(len(images))
        start, rows = 0, self.rows
        tail = self.tails.pop(split, None)
        if tail is not None:  # complete the chunk left short by the previous append
            start = min(len(order), rows - len(tail))
            head = np.concatenate([tail, images[order[:start]]])
            if len(head) < rows:
                self.tails[split] = head
                return
            self._write_chunks(dset, head, np.arange(rows))
        full = start + (len(order) - start) // rows * rows
        self._write_chunks(dset, images, order[start:full])
        if full < len(order):
            self.tails[split] = images[order[full:]]

    def _write_chunks(self, dset: h5py.Dataset, images: np.ndarray, order: np.ndarray) -> None:
        """Start appending ``images[order]``: whole chunks, but for a split's last one.

        Threads gather each chunk's rows and compress them, while the caller goes on;
        ``drain`` writes the results. ``images`` must stay unchanged until then.
        """
        start, rows = dset.shape[0], self.rows
        dset.resize(start + len(order), axis=0)
        zeros = (0,) * (dset.ndim - 1)

        def encode(k: int) -> bytes:
            block = np.empty((rows, *self.image_shape), dtype=np.uint8)
            part = order[k : k + rows]
            # mode="clip": with the default, numpy gathers into a temporary and copies it
            np.take(images, part, axis=0, out=block[: len(part)], mode="clip")
            block[len(part) :] = 0  # HDF5 stores a split's last chunk whole, padded
            return _encode(block)

        for k in range(0, len(order), rows):
            self.pending.append((dset, (start + k, *zeros), self.pool.submit(encode, k)))

    def drain(self) -> None:
        """Wait for the chunks being compressed and write them: after this, arrays given
        to ``append`` may be reused."""
        while self.pending:
            dset, offset, job = self.pending.popleft()
            dset.id.write_direct_chunk(offset, job.result())

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
        for split, tail in self.tails.items():
            self._write_chunks(self.file[split]["images"], tail, np.arange(len(tail)))
        self.drain()
        self.pool.shutdown()
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
            self.pool.shutdown(cancel_futures=True)
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
            if pid.isdigit() and int(pid) != os.getpid() and process_alive(int(pid)):
                continue
            log.info("removing %s, left by an interrupted prepare", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


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
        whole = self.ds._load_images(self.split)
        return whole if dtype is None else whole.astype(dtype)


class PreparedDataset:
    """Reads a prepared dataset (see docs/internals.md for the contract).

    Random access goes through an LRU cache of decompressed image chunks;
    ``iter_batches`` reads whole chunks in a shuffled order instead, decompressing
    each chunk once an epoch, ahead of time, in background threads.
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
        self._handles: dict[tuple[str, str], h5py.Dataset] = {}
        self._sizes: dict[str, int] = {}
        self._blosc_only: dict[str, bool] = {}
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
        """An array of the file; handles are kept (h5py's look-ups cost ~100 us each)."""
        key = (split, name)
        if key not in self._handles:
            if split not in self.file:
                have = ", ".join(self.splits) or "none"
                raise DatasetError(f"{self.path} has no {split!r} split (it has {have})")
            self._handles[key] = self.file[split][name]
        return self._handles[key]

    def size(self, split: str) -> int:
        """Number of examples in ``split`` (0 when absent)."""
        if split not in self._sizes:
            present = split in self.file
            self._sizes[split] = int(self._dset(split, "labels").shape[0]) if present else 0
        return self._sizes[split]

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
        return self._load_images(split), self.labels(split)

    def strokes(self, split: str, i: int) -> list[np.ndarray]:
        """Drawing ``i`` of a split: a list of float32 (n_points, 2|3) strokes."""
        if not self.has_strokes:
            raise DatasetError(f"{self.path} holds no strokes")
        drawing_ends = self._dset(split, "drawing_ends")
        n = self.size(split)
        if not -n <= i < n:
            raise IndexError(f"drawing {i} out of range for {split!r} of size {n}")
        i = i + n if i < 0 else i
        ends = drawing_ends[max(0, i - 1) : i + 1]
        first, last = (0, int(ends[0])) if i == 0 else (int(ends[0]), int(ends[1]))
        if last == first:
            return []
        stroke_ends = self._dset(split, "stroke_ends")[max(0, first - 1) : last]
        start = int(stroke_ends[0]) if first > 0 else 0
        bounds = stroke_ends[1:] if first > 0 else stroke_ends
        points = self._dset(split, "points")[start : int(bounds[-1])]
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

    def _read_chunks(self, split: str, chunks: Sequence[int], out: np.ndarray) -> np.ndarray:
        """Decompress image chunks, in the given order, into the start of ``out``
        (uint8 (>= their examples, H, W[, C])); returns the filled part."""
        dset = self._dset(split, "images")
        rows, n = self._rows, self.size(split)
        direct = self._direct(dset)
        zeros = (0,) * len(self.image_shape)
        pos = 0
        for c in chunks:
            start = int(c) * rows
            dest = out[pos : pos + min(rows, n - start)]
            try:
                mask, raw = dset.id.read_direct_chunk((start, *zeros)) if direct else (1, b"")
                if mask != 0:  # not compressed by our filter alone: let HDF5 decode it
                    dest[...] = dset[start : start + len(dest)]
                elif len(dest) == rows:
                    blosc.decompress(raw, dest)
                else:  # the last chunk is stored whole, padded
                    whole = np.empty((rows, *self.image_shape), dtype=np.uint8)
                    blosc.decompress(raw, whole)
                    dest[...] = whole[: len(dest)]
            except (RuntimeError, ValueError, OSError) as exc:
                raise DatasetError(
                    f"{self.path / DATA_FILE}: chunk {c} of {split}/images cannot be read "
                    f"({exc}); the file is damaged, prepare the dataset again"
                ) from None
            pos += len(dest)
        return out[:pos]

    def _direct(self, dset: h5py.Dataset) -> bool:
        """Whether the chunks of ``dset`` are Blosc frames that we may decode ourselves."""
        if dset.name not in self._blosc_only:
            filters = dset._filters
            self._blosc_only[dset.name] = BLOSC_FILTER in filters and len(filters) == 1
        return self._blosc_only[dset.name]

    def _load_images(self, split: str) -> np.ndarray:
        """All images of a split, decompressed two chunks at a time in parallel."""
        n, rows = self.size(split), self._rows
        out = np.empty((n, *self.image_shape), dtype=np.uint8)
        chunks = range(-(-n // rows))
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda c: self._read_chunks(split, [c], out[c * rows :]), chunks))
        return out

    def _chunk(self, split: str, c: int) -> np.ndarray:
        """Chunk ``c`` of a split's images, through an LRU cache of decompressed chunks."""
        key = (split, c)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        block = self._read_chunks(split, [c], np.empty((self._rows, *self.image_shape), np.uint8))
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
        by_chunk = np.argsort(chunks, kind="stable")
        starts = np.flatnonzero(np.diff(chunks[by_chunk])) + 1
        for sel in np.split(by_chunk, starts) if len(idx) else []:
            c = int(chunks[sel[0]])
            out[sel] = self._chunk(split, c)[idx[sel] - c * self._rows]
        return out

    def _window(self, window: int | None) -> int:
        """Chunks per window: ``window``, or as many as fit in WINDOW_BYTES (at least 2)."""
        if window is not None:
            if window < 1:
                raise ValueError(f"window must be at least 1 chunk, got {window}")
            return window
        chunk_bytes = self._rows * int(np.prod(self.image_shape))
        return max(2, WINDOW_BYTES // chunk_bytes)

    def _windows(
        self,
        split: str,
        shuffle: bool,
        seed: int,
        window: int | None,
        keep: np.ndarray | None = None,
    ) -> Iterator[_Window]:
        """The windows of an epoch: chunks in a seeded random order, ``window`` at a
        time, the examples of each window shuffled together; ``keep`` (bool (n,)) drops
        the others after shuffling, so the examples kept come in the same order whatever
        the mask."""
        rows, n = self._rows, self.size(split)
        if keep is not None and keep.shape != (n,):
            raise ValueError(f"keep must be a bool array of shape ({n},), got {keep.shape}")
        window = self._window(window)
        rng = np.random.default_rng(seed)
        n_chunks = -(-n // rows)
        order = rng.permutation(n_chunks) if shuffle else np.arange(n_chunks)
        for w in range(0, n_chunks, window):
            chunks = order[w : w + window]
            sizes = np.minimum(rows, n - chunks * rows)
            slots = np.concatenate([j * rows + np.arange(k) for j, k in enumerate(sizes)])
            index = np.repeat(chunks * rows - np.arange(len(chunks)) * rows, sizes) + slots
            served = rng.permutation(len(index)) if shuffle else np.arange(len(index))
            index, slots = index[served], slots[served]
            if keep is not None:
                kept = keep[index]
                index, slots = index[kept], slots[kept]
            yield _Window(chunks, index, slots)

    def _plan(
        self,
        split: str,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        window: int | None,
        keep: np.ndarray | None,
    ) -> Iterator[tuple[_Window | None, list[list[_Segment]], int]]:
        """Per window: the window, the batches it completes, each batch a list of
        (window number, start, stop) stretches of the windows' served examples (a batch
        may begin in earlier windows), and the window where the next batch starts (no
        batch to come reads a window before it). A last partial batch comes with window
        None."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        held: list[_Segment] = []
        count = 0
        for k, w in enumerate(self._windows(split, shuffle, seed, window, keep)):
            done: list[list[_Segment]] = []
            a, m = 0, len(w.index)
            while a < m:
                take = min(batch_size - count, m - a)
                held.append((k, a, a + take))
                count, a = count + take, a + take
                if count == batch_size:
                    done.append(held)
                    held, count = [], 0
            yield w, done, held[0][0] if held else k + 1
        if held and not drop_last:
            yield None, [held], held[0][0]

    def batch_indices(
        self,
        split: str,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        window: int | None = None,
        keep: np.ndarray | None = None,
    ) -> Iterator[np.ndarray]:
        """The index arrays, int64 (b,), that ``iter_batches`` yields, without reading images."""
        served: dict[int, np.ndarray] = {}
        plan = self._plan(split, batch_size, shuffle, seed, drop_last, window, keep)
        for k, (w, batches, first_open) in enumerate(plan):
            if w is not None:
                served[k] = w.index
            for segments in batches:
                yield np.concatenate([served[j][a:b] for j, a, b in segments])
            for j in [j for j in served if j < first_open]:
                del served[j]

    def iter_batches(
        self,
        split: str,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        window: int | None = None,
        keep: np.ndarray | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> Generator[tuple[np.ndarray, np.ndarray, np.ndarray], None, None]:
        """Batches covering the split once: (images uint8 (b, H, W[, C]), labels int64 (b,),
        indices int64 (b,)).

        With ``shuffle`` the order is random at two levels with bounded memory: chunks in
        a random order, ``window`` at a time (by default about WINDOW_BYTES of images),
        and the examples of each window shuffled together. The store was shuffled across
        classes when written, so every chunk already mixes classes. The same seed gives
        the same batches. ``keep`` (bool (n,)) leaves the other examples out, batches
        still full; with ``world`` > 1 only every ``world``-th batch from ``rank`` is
        read and yielded (the processes of a data-parallel run share one order).

        Reading is a pipeline on background threads (numcodecs releases the GIL): while
        the batches of one window are served, the chunks of the next ones are
        decompressed into their own buffers and the batches gathered out of them, so the
        caller mostly finds its next batch ready.
        """
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, {world}), got {rank}")
        labels = self.labels(split)
        plan = self._plan(split, batch_size, shuffle, seed, drop_last, window, keep)
        rows, shape = self._rows, self.image_shape
        size = self._window(window) * rows
        live: dict[int, _Live] = {}  # windows whose buffer is in use, by number
        free: list[np.ndarray] = []
        ready: deque[tuple[int, np.ndarray, Future[list[np.ndarray]], int]] = deque()
        pool = ThreadPoolExecutor(max_workers=DECODE_THREADS)
        first_open = 0  # the window where the next batch starts: none before it is read again
        served = 0
        try:
            for k, (w, batches, next_open) in enumerate(plan):
                if w is not None:
                    _recycle(live, free, first_open)
                    buffer = free.pop() if free else np.empty((size, *shape), np.uint8)
                    jobs = [
                        pool.submit(self._read_chunks, split, [c], buffer[j * rows :])
                        for j, c in enumerate(w.chunks.tolist())
                    ]
                    live[k] = _Live(buffer, w, jobs)
                first_open = next_open
                mine = []
                for segments in batches:
                    if served % world == rank:
                        mine.append(segments)
                    served += 1
                # The batches of a window are gathered by a few jobs (one per thread), not
                # one job each: a job costs tens of microseconds of Python.
                for group in np.array_split(
                    np.arange(len(mine)), max(1, min(len(mine), DECODE_THREADS))
                ):
                    todo = [mine[i] for i in group]
                    if not todo:
                        continue
                    parts = [
                        [(live[j].jobs, live[j].buffer, live[j].slots[a:b]) for j, a, b in segs]
                        for segs in todo
                    ]
                    job = pool.submit(_gather_batches, parts, shape)
                    for segs in todo:
                        for j, _, _ in segs:
                            live[j].users.append(job)
                    for i, segs in enumerate(todo):
                        index = np.concatenate([live[j].index[a:b] for j, a, b in segs])
                        ready.append((k, index, job, i))
                # Serve what was planned AHEAD windows ago; the pool works on the rest.
                while ready and (w is None or ready[0][0] <= k - AHEAD):
                    _, index, job, i = ready.popleft()
                    yield job.result()[i], labels[index], index
            while ready:
                _, index, job, i = ready.popleft()
                yield job.result()[i], labels[index], index
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Window:
    """One window of an epoch: its chunks, and its examples in the order they are served
    (``index``: their numbers in the split; ``slots``: their rows in a buffer holding
    chunk j from row j * rows)."""

    chunks: np.ndarray
    index: np.ndarray
    slots: np.ndarray


@dataclass
class _Live:
    """A window being read: the buffer its chunks are decompressed into, those jobs,
    and the jobs gathering batches out of it."""

    buffer: np.ndarray
    window: _Window
    jobs: list[Future[np.ndarray]]
    users: list[Future[list[np.ndarray]]] = field(default_factory=list)

    @property
    def index(self) -> np.ndarray:
        return self.window.index

    @property
    def slots(self) -> np.ndarray:
        return self.window.slots


# (window number, start, stop): a stretch of a window's served examples in a batch
_Segment = tuple[int, int, int]


def _recycle(live: dict[int, _Live], free: list[np.ndarray], first_open: int) -> None:
    """Move to ``free`` the buffers of windows before ``first_open`` (no batch to come
    reads them) once their chunks are decompressed and their batches gathered: at once
    when they are, and, while PIPELINE_DEPTH windows are in use, the oldest after
    waiting. (A window may have no batch of this process to wait for, but its chunks are
    still being written into the buffer.)"""
    for j in sorted(live):
        if j >= first_open:
            break
        pending: list[Future[Any]] = [*live[j].jobs, *live[j].users]
        if len(live) < PIPELINE_DEPTH and not all(job.done() for job in pending):
            break
        for job in pending:
            job.result()
        free.append(live.pop(j).buffer)


def _gather_batches(
    batches: list[list[tuple[list[Future[np.ndarray]], np.ndarray, np.ndarray]]],
    shape: tuple[int, ...],
) -> list[np.ndarray]:
    """Batches gathered out of window buffers. Each batch is a list of parts: (the jobs
    filling a buffer, the buffer, the rows to take from it), waited for in turn."""
    done: set[int] = set()
    out = []
    for parts in batches:
        batch = np.empty((sum(len(rows) for _, _, rows in parts), *shape), np.uint8)
        start = 0
        for jobs, buffer, rows in parts:
            if id(jobs) not in done:
                for job in jobs:
                    job.result()
                done.add(id(jobs))
            # mode="clip": with the default, numpy gathers into a temporary and copies it
            np.take(buffer, rows, axis=0, out=batch[start : start + len(rows)], mode="clip")
            start += len(rows)
        out.append(batch)
    return out
