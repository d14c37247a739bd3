"""The prepared-dataset store: ``manifest.json`` + ``data.h5``.

``data.h5`` holds one group per split (``train``, ``valid``, ``test``) with
``images`` uint8 (n, H, W[, C]) and ``labels`` int32 (n,), compressed with
Blosc/LZ4 in chunks of whole images along the first axis (about 1 MB each), so any
example can be read without reading the rest. Drawings, when the source has them,
are kept as ``points`` float32 (total points, 2 or 3: x, y[, t ms]), ``stroke_ends``
int64 (cumulative points per stroke) and ``drawing_ends`` int64 (cumulative strokes
per drawing), so drawing ``i`` is two offset look-ups and one slice away.

The modules: ``format`` (what writer and reader agree on: names, version, chunking,
compression), ``writer`` (``StoreWriter``, all or nothing), ``reader``
(``PreparedDataset``), ``plan`` (``BatchPlan``: an epoch's order and batches, pure
numpy) and ``pipeline`` (reading those batches on background threads).
"""

from .format import (
    CHUNK_BYTES,
    DATA_FILE,
    FORMAT_VERSION,
    MANIFEST,
    SPLITS,
    chunk_rows,
    manifest_hash,
)
from .plan import BatchPlan
from .reader import LazyImages, PreparedDataset
from .writer import StoreWriter, remove_partials

__all__ = [
    "CHUNK_BYTES",
    "DATA_FILE",
    "FORMAT_VERSION",
    "MANIFEST",
    "SPLITS",
    "BatchPlan",
    "LazyImages",
    "PreparedDataset",
    "StoreWriter",
    "chunk_rows",
    "manifest_hash",
    "remove_partials",
]
