"""The prepared-dataset store (being split into modules; see reader.py for now)."""

from .reader import (  # noqa: F401
    CHUNK_BYTES,
    DATA_FILE,
    FORMAT_VERSION,
    MANIFEST,
    SPLITS,
    LazyImages,
    PreparedDataset,
    StoreWriter,
    _Live,
    _recycle,
    _Window,
    chunk_rows,
    manifest_hash,
    remove_partials,
)
