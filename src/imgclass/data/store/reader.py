"""Reading a prepared dataset: ``PreparedDataset``.

Random access goes through an LRU cache of decompressed image chunks; batches of a
whole epoch come from ``iter_batches``, which reads whole chunks in a shuffled order
instead, decompressing each chunk once an epoch, ahead of time, in background threads
(``pipeline.py``), in the order a ``BatchPlan`` gives (``plan.py``).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numcodecs.blosc as blosc
import numpy as np

from imgclass.errors import DatasetError

from .format import BLOSC_FILTER, DATA_FILE, FORMAT_VERSION, MANIFEST, SPLITS, chunk_rows
from .pipeline import read_batches
from .plan import BatchPlan

CACHE_BYTES = 256 << 20  # decompressed image chunks kept by a reader for random access
HDF5_CACHE_BYTES = 16 << 20  # HDF5's own chunk cache (labels, strokes)


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
            one: np.ndarray = self.ds._gather(self.split, np.array([int(key)]))[0]
            return one
        return self.ds._gather(self.split, np.asarray(key, dtype=np.int64))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self.ds._load_images(self.split)
        return whole if dtype is None else whole.astype(dtype)


class PreparedDataset:
    """Reads a prepared dataset (see docs/internals.md for the contract): random access
    through an LRU cache of decompressed chunks, and the batches of an epoch."""

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
        self.rows = chunk_rows(self.image_shape)  # examples per chunk of images

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

    # --- batches of an epoch ---------------------------------------------------------

    def batch_indices(self, split: str, plan: BatchPlan) -> Iterator[np.ndarray]:
        """The index arrays, int64 (b,), that ``iter_batches(split, plan)`` yields,
        without reading images."""
        per_window = plan.chunks_per_window(self.chunk_bytes)
        yield from plan.indices(self.size(split), self.rows, per_window)

    def iter_batches(
        self, split: str, plan: BatchPlan
    ) -> Generator[tuple[np.ndarray, np.ndarray, np.ndarray], None, None]:
        """Batches covering the split once, as ``plan`` cuts it: (images uint8
        (b, H, W[, C]), labels int64 (b,), indices int64 (b,)).

        Reading is a pipeline on background threads (see ``pipeline.py``): the caller
        mostly finds its next batch ready, and memory stays bounded (a few windows of
        about 16 MB by default). Closing the generator stops its threads."""
        return read_batches(self, split, plan)

    # --- chunked reading -------------------------------------------------------------

    @property
    def chunk_bytes(self) -> int:
        """Bytes of one decompressed chunk of images."""
        return self.rows * int(np.prod(self.image_shape))

    def read_chunks(self, split: str, chunks: Sequence[int], out: np.ndarray) -> np.ndarray:
        """Decompress image chunks, in the given order, into the start of ``out``
        (uint8 (>= their examples, H, W[, C])); returns the filled part."""
        dset = self._dset(split, "images")
        rows, n = self.rows, self.size(split)
        direct = self._direct(dset)
        pos = 0
        for c in chunks:
            dest = out[pos : pos + min(rows, n - int(c) * rows)]
            try:
                self._read_chunk(dset, int(c), dest, direct)
            except (RuntimeError, ValueError, OSError) as exc:
                raise DatasetError(
                    f"{self.path / DATA_FILE}: chunk {c} of {split}/images cannot be read "
                    f"({exc}); the file is damaged, prepare the dataset again"
                ) from None
            pos += len(dest)
        return out[:pos]

    def _read_chunk(self, dset: h5py.Dataset, c: int, dest: np.ndarray, direct: bool) -> None:
        """Chunk ``c`` of ``dset`` into ``dest`` (its examples): decompressed here when
        ``direct``, else by HDF5."""
        start, rows = c * self.rows, self.rows
        zeros = (0,) * len(self.image_shape)
        mask, raw = dset.id.read_direct_chunk((start, *zeros)) if direct else (1, b"")
        if mask != 0:  # not compressed by our filter alone: let HDF5 decode it
            dest[...] = dset[start : start + len(dest)]
        elif len(dest) == rows:
            blosc.decompress(raw, dest)
        else:  # the last chunk is stored whole, padded
            whole = np.empty((rows, *self.image_shape), dtype=np.uint8)
            blosc.decompress(raw, whole)
            dest[...] = whole[: len(dest)]

    def _direct(self, dset: h5py.Dataset) -> bool:
        """Whether the chunks of ``dset`` are Blosc frames that we may decode ourselves."""
        if dset.name not in self._blosc_only:
            filters = dset._filters
            self._blosc_only[dset.name] = BLOSC_FILTER in filters and len(filters) == 1
        return self._blosc_only[dset.name]

    def _load_images(self, split: str) -> np.ndarray:
        """All images of a split, decompressed two chunks at a time in parallel."""
        n, rows = self.size(split), self.rows
        out = np.empty((n, *self.image_shape), dtype=np.uint8)
        chunks = range(-(-n // rows))
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda c: self.read_chunks(split, [c], out[c * rows :]), chunks))
        return out

    def _chunk(self, split: str, c: int) -> np.ndarray:
        """Chunk ``c`` of a split's images, through an LRU cache of decompressed chunks."""
        key = (split, c)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        block = self.read_chunks(split, [c], np.empty((self.rows, *self.image_shape), np.uint8))
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
        chunks = idx // self.rows
        by_chunk = np.argsort(chunks, kind="stable")
        starts = np.flatnonzero(np.diff(chunks[by_chunk])) + 1
        for sel in np.split(by_chunk, starts) if len(idx) else []:
            c = int(chunks[sel[0]])
            out[sel] = self._chunk(split, c)[idx[sel] - c * self.rows]
        return out
