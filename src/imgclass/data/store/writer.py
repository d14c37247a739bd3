"""Writing a prepared dataset: ``StoreWriter``.

The writer builds everything in a hidden sibling folder ``.<name>.partial-<pid>``
and renames it into place at the end, after the manifest is written, so an
interrupted prepare never leaves a complete-looking store; the next prepare of the
same output removes such leftovers. numcodecs releases the GIL: image chunks are
compressed on several cores while the caller goes on.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from imgclass.atomic import process_alive
from imgclass.errors import DatasetError

from .format import DATA_FILE, MANIFEST, OFFSET_ROWS, SPLITS, chunk_rows, compression, encode

log = logging.getLogger(__name__)


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
        self.blocks = threading.local()  # each compressing thread's reusable chunk buffer

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
        self._check(split, images, n, labels, drawings)
        g = self._group(split)
        self._append_images(split, g["images"], images, order)
        _extend(g["labels"], np.asarray(labels, dtype=np.int32))
        if self.with_strokes and drawings is not None:
            self._append_drawings(g, drawings)
        self.counts[split] += n
        if wait:
            self.drain()

    def _check(
        self,
        split: str,
        images: np.ndarray,
        n: int,
        labels: np.ndarray,
        drawings: Sequence[Sequence[np.ndarray]] | None,
    ) -> None:
        """Refuse an append that does not fit the store; learn ``point_dims`` from the
        first drawings when it was not given."""
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

        def encode_chunk(k: int) -> bytes:
            block = self._block()
            part = order[k : k + rows]
            # mode="clip": with the default, numpy gathers into a temporary and copies it
            np.take(images, part, axis=0, out=block[: len(part)], mode="clip")
            block[len(part) :] = 0  # HDF5 stores a split's last chunk whole, padded
            return encode(block)

        for k in range(0, len(order), rows):
            self.pending.append((dset, (start + k, *zeros), self.pool.submit(encode_chunk, k)))

    def _block(self) -> np.ndarray:
        """This thread's chunk-sized buffer to gather rows into, reused chunk after chunk:
        fresh memory for every chunk would cost a page fault per 4 kB each time."""
        block: np.ndarray | None = getattr(self.blocks, "block", None)
        if block is None:
            block = self.blocks.block = np.empty((self.rows, *self.image_shape), np.uint8)
        return block

    def write_ready(self) -> None:
        """Write the chunks compressed so far, in order, without waiting: what is written
        no longer holds memory (call it now and then while appending with wait=False)."""
        while self.pending and self.pending[0][2].done():
            dset, offset, job = self.pending.popleft()
            dset.id.write_direct_chunk(offset, job.result())

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
        **compression(),
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
