"""The seed projects' own dataset formats, as peers of our store in bench_read and
bench_prepare (issue 12, item 7).

- The Pictionary project's layout: one HDF5 file, a dataset ``images`` of N x 28 x 28
  uint8 compressed with gzip level 4 and chunked along N, and a dataset ``labels``.
  Its chunk is not recorded in the issue; we use (1000, 28, 28), 784 kB, close to our
  own chunks (about 1 MB) and to what h5py's auto-chunking picks for a resizable
  dataset of this shape; ``--peer-chunk`` changes it.
- A plain ``.npz``: ``np.savez_compressed`` (zip deflate) and ``np.savez`` (stored),
  keys ``x`` and ``y``; reading one means decompressing the whole array into memory.

``distinct_tiles`` makes N distinct bitmaps out of the 27,600 real ones: prepare keeps
exact duplicates out, so plain tiling would leave only the originals in the store.

Each writer takes the images already in memory (the source files' reading is timed
apart by the callers, as for our store) and returns nothing; each reader returns the
seconds one epoch of the given batches took.
"""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np

GZIP_LEVEL = 4
PEER_CHUNK = 1000


def distinct_tiles(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` bitmaps from the real ones (m, 28, 28), every copy after the first shifted
    by a different (dy, dx) of up to 4 pixels (np.roll), so that none repeats: real
    strokes, the same ink per image, so the same compressibility as the originals."""
    shifts = [(dy, dx) for dy in range(5) for dx in range(5)] + [
        (dy, dx) for dy in range(-4, 0) for dx in range(-4, 5)
    ]
    copies = -(-n // len(x))
    if copies > len(shifts):
        raise ValueError(f"at most {len(shifts) * len(x)} distinct bitmaps, asked for {n}")
    xs = [np.roll(x, shifts[k], axis=(1, 2)) for k in range(copies)]
    return np.concatenate(xs)[:n], np.resize(y, n)


def write_hdf5_gzip(path: Path, x: np.ndarray, y: np.ndarray, chunk: int = PEER_CHUNK) -> None:
    """The Pictionary layout: images (N, 28, 28) uint8, gzip 4, chunks of ``chunk`` images."""
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "images",
            data=x,
            chunks=(min(chunk, len(x)), *x.shape[1:]),
            compression="gzip",
            compression_opts=GZIP_LEVEL,
        )
        f.create_dataset("labels", data=y, compression="gzip", compression_opts=GZIP_LEVEL)


def write_npz(path: Path, x: np.ndarray, y: np.ndarray, compressed: bool) -> None:
    (np.savez_compressed if compressed else np.savez)(path, x=x, y=y)


def read_hdf5(path: Path, batches: list[np.ndarray], cache_mb: int) -> float:
    """One epoch of ``batches`` (index arrays) read with h5py's fancy indexing (indices
    sorted, as h5py requires), through a chunk cache of ``cache_mb`` MB."""
    start = time.perf_counter()
    with h5py.File(path, "r", rdcc_nbytes=cache_mb << 20, rdcc_nslots=100_003) as f:
        images, labels = f["images"], f["labels"][:]
        for b in batches:
            order = np.sort(b)
            xb, yb = images[order], labels[order]
    del xb, yb
    return time.perf_counter() - start


def read_hdf5_chunks(path: Path, batches: list[np.ndarray], cache_mb: int) -> float:
    """One epoch of ``batches`` read the best way we know for this layout: each chunk a
    batch needs is read raw (``read_direct_chunk``) and inflated with zlib once, kept
    decompressed in an LRU of ``cache_mb`` MB, and the batch gathered from those chunks.
    What is left is the format's own cost (gzip against our LZ4), not h5py's selection."""
    import zlib
    from collections import OrderedDict

    start = time.perf_counter()
    with h5py.File(path, "r") as f:
        images, labels = f["images"], f["labels"][:]
        rows, shape = images.chunks[0], images.shape[1:]
        keep = max(1, (cache_mb << 20) // (rows * int(np.prod(shape))))
        cache: OrderedDict[int, np.ndarray] = OrderedDict()
        for b in batches:
            which = b // rows
            xb = np.empty((len(b), *shape), np.uint8)
            for c in np.unique(which):
                block = cache.get(int(c))
                if block is None:
                    _, raw = images.id.read_direct_chunk((int(c) * rows, 0, 0))
                    block = np.frombuffer(zlib.decompress(raw), np.uint8).reshape(-1, *shape)
                    cache[int(c)] = block
                    if len(cache) > keep:
                        cache.popitem(last=False)
                else:
                    cache.move_to_end(int(c))
                sel = which == c
                xb[sel] = block[b[sel] - c * rows]
            yb = labels[b]
    del xb, yb
    return time.perf_counter() - start


def read_npz(path: Path, batches: list[np.ndarray]) -> float:
    """One epoch: the arrays loaded whole (np.load decompresses them), then gathered."""
    start = time.perf_counter()
    with np.load(path) as npz:
        x, y = npz["x"], npz["y"]
    for b in batches:
        xb, yb = x[b], y[b]
    del xb, yb
    return time.perf_counter() - start


def size_mb(path: Path) -> float:
    """Size on disk of a file, or of all files under a folder, in MB."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6
