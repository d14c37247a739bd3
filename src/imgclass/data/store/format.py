"""What the writer and the reader agree on: file names, the format version, chunking and
the image chunks' compression.

Image chunks are compressed and decompressed by numcodecs' Blosc, outside HDF5's
filter pipeline (``write_direct_chunk`` / ``read_direct_chunk``) but in exactly the
format of the HDF5 Blosc filter, so any h5py with hdf5plugin reads the file as usual.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import hdf5plugin
import numcodecs.blosc as blosc
import numpy as np

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
DATA_FILE = "data.h5"
MANIFEST = "manifest.json"
CHUNK_BYTES = 1 << 20  # about 1 MB of images per compressed chunk
OFFSET_ROWS = 65536  # rows per chunk of labels and stroke offsets/points
BLOSC_FILTER = "32001"  # HDF5's registered id of the Blosc filter
CNAME: Literal["lz4"] = "lz4"  # Blosc codec...
CLEVEL, SHUFFLE = 5, 0  # ...its level, and no shuffling (the values are bytes already)


def chunk_rows(image_shape: Sequence[int]) -> int:
    """Images per compressed chunk: about CHUNK_BYTES, at least 1."""
    return max(1, CHUNK_BYTES // int(np.prod(image_shape)))


def compression() -> dict[str, Any]:
    """HDF5 dataset options of the store's Blosc filter (for h5py's ``create_dataset``)."""
    # LZ4 without shuffling: on Quick, Draw! bitmaps it decompresses at about 3 GB/s on
    # one core, 2-3x faster than Zstd level 1, for files about 1.4x larger.
    return dict(hdf5plugin.Blosc(cname=CNAME, clevel=CLEVEL, shuffle=SHUFFLE))


def encode(block: np.ndarray) -> bytes:
    """One full image chunk, compressed as HDF5's Blosc filter would."""
    return bytes(blosc.compress(np.ascontiguousarray(block), CNAME.encode(), CLEVEL, SHUFFLE))


def manifest_hash(path: str | Path) -> str:
    """sha256 of a prepared dataset's manifest.json (identifies the data a model saw)."""
    return hashlib.sha256((Path(path) / MANIFEST).read_bytes()).hexdigest()
