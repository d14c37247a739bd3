"""Google Quick, Draw! numpy bitmaps (``.npy``) and the binary format (``.bin``).

Facts (DESIGN.md): bitmaps are uint8 (n, 784), ink = 255 on 0, one category per
file. The binary format packs each drawing as key_id uint64, countrycode 2 bytes,
recognized uint8, timestamp uint32, n_strokes uint16, then per stroke n_points
uint16 and x, y as n_points uint8 each, all little-endian. The ndjson reader lives
in ``ndjson.py`` and is re-exported here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from imgclass.data.limits import ReadLimits
from imgclass.data.sources.base import Chunk, Drawing, Reader, label_from_filename
from imgclass.data.sources.fileio import (
    GZIP_ERRORS,
    corrupt_gzip,
    open_maybe_gzip,
    read_array,
    read_exact,
    read_npy_header,
)
from imgclass.data.sources.ndjson import (
    MAX_POINTS_PER_DRAWING,
    STROKE_OVERHEAD,
    NdjsonSource,
    parse_drawing,
)
from imgclass.errors import DataFormatError

__all__ = [
    "BinarySource",
    "NdjsonSource",
    "NpyBitmapSource",
    "iter_binary_drawings",
    "open_maybe_gzip",
    "parse_drawing",
    "read_npy_header_checked",
]

BITMAP_PIXELS = 28 * 28
_BIN_HEADER = struct.Struct("<Q2sBIH")
_BIN_COUNT = struct.Struct("<H")


class NpyBitmapSource(Reader):
    """``<category>.npy`` (e.g. ``full_numpy_bitmap_cat.npy``): uint8 (n, 784) bitmaps.

    The header is checked when the source is opened, so a truncated file is refused
    before anything is read. Chunks hold ``images`` uint8 (k, 28, 28) and ids
    ``"<label>:<row>"``; with ``per_class=N`` only the first N rows are read.
    """

    format = "quickdraw-npy"

    def __init__(
        self,
        path: str | Path,
        *,
        categories: list[str] | None = None,
        per_class: int | None = None,
        label: str | None = None,
        limits: ReadLimits | None = None,
    ) -> None:
        super().__init__(path, categories=categories, per_class=per_class, limits=limits)
        self.label = label or label_from_filename(self.path, ("full_numpy_bitmap_",))
        self.filter = self.label_filter()
        self.n, self.offset = read_npy_header_checked(Path(path))

    def classes(self) -> list[str] | None:
        return [self.label]

    def iter_chunks(self, chunk_size: int = 4096) -> Iterator[Chunk]:
        if not self.filter.wants(self.label):
            return
        n = min(self.n, self.filter.per_class or self.n)
        chunk_size = self.limits.rows_per_chunk(BITMAP_PIXELS, chunk_size)
        # Plain reads rather than a memory map, so resident memory stays one chunk.
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for start in range(0, n, chunk_size):
                stop = min(n, start + chunk_size)
                # The images go straight into the chunk: a local naming them would keep
                # them alive while this generator waits (one chunk per source, which
                # adds up when hundreds of files are read side by side).
                yield Chunk(
                    labels=[self.label] * (stop - start),
                    source=self.path,
                    images=read_array(
                        f,
                        (stop - start, 28, 28),
                        np.uint8,
                        self.path,
                        f"row {start}",
                        "bitmap data",
                    ),
                    ids=[f"{self.label}:{i}" for i in range(start, stop)],
                )


def read_npy_header_checked(path: Path) -> tuple[int, int]:
    """Check a Quick, Draw! ``.npy`` header and size; return (drawings, data offset)."""
    with open(path, "rb") as f:
        shape, fortran, dtype = read_npy_header(f, path)
        offset = f.tell()
    if dtype != np.uint8 or len(shape) != 2 or shape[1] != BITMAP_PIXELS or fortran:
        raise DataFormatError(
            path, f"expected a uint8 array of shape (n, 784), found {dtype} {shape}"
        )
    expected = offset + shape[0] * BITMAP_PIXELS
    actual = path.stat().st_size
    if actual < expected:
        raise DataFormatError(
            path,
            f"truncated: the header promises {shape[0]} drawings ({expected} bytes) "
            f"but the file has {actual} bytes",
        )
    return shape[0], offset


class BinarySource(Reader):
    """Quick, Draw! ``.bin`` (e.g. ``full_binary_cat.bin``): simplified strokes as bytes.

    Chunks carry ``strokes`` (float32 (n_points, 2), 0..255), ids from ``key_id`` and,
    in ``meta``, ``recognized`` and ``countrycode`` per drawing; at most ``chunk_size``
    drawings and, but for one, at most ``limits.chunk_bytes`` of points.
    """

    format = "quickdraw-bin"

    def __init__(
        self,
        path: str | Path,
        *,
        categories: list[str] | None = None,
        per_class: int | None = None,
        label: str | None = None,
        limits: ReadLimits | None = None,
    ) -> None:
        super().__init__(path, categories=categories, per_class=per_class, limits=limits)
        self.label = label or label_from_filename(self.path, ("full_binary_",))
        self.filter = self.label_filter()

    def classes(self) -> list[str] | None:
        return [self.label]

    def iter_chunks(self, chunk_size: int = 4096) -> Iterator[Chunk]:
        if not self.filter.wants(self.label):
            return
        limit = self.filter.per_class
        try:
            with open_maybe_gzip(self.path) as f:
                records = iter_binary_drawings(f, self.path)
                max_bytes = self.limits.chunk_bytes
                while part := _take(records, min(chunk_size, limit or chunk_size), max_bytes):
                    yield self._chunk(part)
                    if limit is not None:
                        limit -= len(part)
                        if limit <= 0:
                            return
        except GZIP_ERRORS as exc:
            raise corrupt_gzip(self.path, exc) from None

    def _chunk(self, part: list[tuple[int, str, bool, Drawing]]) -> Chunk:
        return Chunk(
            labels=[self.label] * len(part),
            source=self.path,
            strokes=[drawing for *_, drawing in part],
            stroke_kind="simplified",
            ids=[str(key) for key, *_ in part],
            meta={
                "countrycode": [country for _, country, _, _ in part],
                "recognized": [recognized for _, _, recognized, _ in part],
            },
        )


def _take(
    records: Iterator[tuple[int, str, bool, Drawing]], n: int, max_bytes: int
) -> list[tuple[int, str, bool, Drawing]]:
    """The next records: ``n``, or fewer (at least one) whose strokes fill ``max_bytes``."""
    part: list[tuple[int, str, bool, Drawing]] = []
    nbytes = 0
    for record in records:
        part.append(record)
        nbytes += sum(s.nbytes + STROKE_OVERHEAD for s in record[3])
        if len(part) >= n or nbytes >= max_bytes:
            break
    return part


def iter_binary_drawings(f: IO[bytes], path: str) -> Iterator[tuple[int, str, bool, Drawing]]:
    """(key_id, countrycode, recognized, drawing) per record of an open ``.bin`` stream.

    Raises ``DataFormatError`` naming the drawing's index when a record is cut short,
    holds no points, or more than MAX_POINTS_PER_DRAWING (counted from the stroke
    headers, before a stroke is read: 65,535 strokes of 65,535 points would need 34 GB).
    """
    index = 0
    while header := f.read(_BIN_HEADER.size):
        where = f"drawing {index}"
        if len(header) < _BIN_HEADER.size:
            raise DataFormatError(path, "truncated record header", where)
        key_id, country, recognized, _timestamp, n_strokes = _BIN_HEADER.unpack(header)
        drawing: Drawing = []
        total = 0
        for k in range(n_strokes):
            (n_points,) = _BIN_COUNT.unpack(read_exact(f, 2, path, where, f"stroke {k}"))
            total += n_points
            if total > MAX_POINTS_PER_DRAWING:
                raise DataFormatError(
                    path, f"more than the limit of {MAX_POINTS_PER_DRAWING} points", where
                )
            xy = read_exact(f, 2 * n_points, path, where, f"stroke {k}")
            if n_points:
                points = np.frombuffer(xy, dtype=np.uint8).reshape(2, n_points).T
                drawing.append(points.astype(np.float32))
        if not drawing:
            raise DataFormatError(path, "drawing has no points", where)
        yield key_id, country.decode("ascii", "replace"), bool(recognized), drawing
        index += 1
