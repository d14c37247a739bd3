"""Google Quick, Draw! formats: numpy bitmaps, ndjson strokes and the binary format.

Facts (DESIGN.md): bitmaps are uint8 (n, 784), ink = 255 on 0; ndjson lines hold
``word``, ``key_id``, ``countrycode``, ``recognized``, ``timestamp`` and ``drawing``
(strokes ``[[x...], [y...]]``, plus ``[t...]`` in the raw files); the binary format
packs each drawing as key_id uint64, countrycode 2 bytes, recognized uint8,
timestamp uint32, n_strokes uint16, then per stroke n_points uint16, x and y as
n_points uint8 each, all little-endian.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from imgclass.data.sources.base import Chunk, Drawing, LabelFilter, label_from_filename
from imgclass.errors import DataFormatError

MAX_POINTS_PER_DRAWING = 100_000
_BIN_HEADER = struct.Struct("<Q2sBIH")


def open_maybe_gzip(path: Path) -> IO[bytes]:
    """Open a file for binary reading, transparently gunzipping ``*.gz`` files."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


class NpyBitmapSource:
    """``<category>.npy``: uint8 (n, 784) 28x28 bitmaps, one class per file."""

    format = "quickdraw-npy"

    def __init__(
        self,
        path: str | Path,
        *,
        categories: list[str] | None = None,
        per_class: int | None = None,
        label: str | None = None,
    ) -> None:
        self.path = str(path)
        self.label = label or label_from_filename(self.path, ("full_numpy_bitmap_",))
        self.filter = LabelFilter(categories, per_class)
        self.n, self.offset = read_npy_header(Path(path))

    def classes(self) -> list[str] | None:
        return [self.label]

    def iter_chunks(self, chunk_size: int = 4096) -> Iterator[Chunk]:
        if not self.filter.wants(self.label) or self.n == 0:
            return
        n = min(self.n, self.filter.per_class or self.n)
        # Plain reads rather than a memory map, so resident memory stays one chunk.
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for start in range(0, n, chunk_size):
                stop = min(n, start + chunk_size)
                images = np.fromfile(f, dtype=np.uint8, count=(stop - start) * 784)
                ids = [f"{self.label}:{i}" for i in range(start, stop)]
                yield Chunk(
                    labels=[self.label] * (stop - start),
                    source=self.path,
                    images=images.reshape(-1, 28, 28),
                    ids=ids,
                )


def read_npy_header(path: Path) -> tuple[int, int]:
    """Check a Quick, Draw! ``.npy`` header; return (number of drawings, data offset)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
    except (ValueError, OSError, SyntaxError) as exc:
        raise DataFormatError(path, f"not a valid .npy file ({exc})") from None
    if dtype != np.uint8 or len(shape) != 2 or shape[1] != 784 or fortran:
        raise DataFormatError(
            path, f"expected a uint8 array of shape (n, 784), found {dtype} {shape}"
        )
    expected = offset + shape[0] * 784
    actual = path.stat().st_size
    if actual < expected:
        raise DataFormatError(
            path,
            f"truncated: the header promises {shape[0]} drawings ({expected} bytes) "
            f"but the file has {actual} bytes",
        )
    return int(shape[0]), offset


class NdjsonSource:
    """Quick, Draw! ndjson (simplified or raw, plain or gzipped), any number of words."""

    format = "quickdraw-ndjson"

    def __init__(
        self,
        path: str | Path,
        *,
        categories: list[str] | None = None,
        per_class: int | None = None,
        label: str | None = None,
    ) -> None:
        self.path = str(path)
        self.label = label
        self.filter = LabelFilter(categories, per_class)

    def classes(self) -> list[str] | None:
        return None

    def iter_chunks(self, chunk_size: int = 4096) -> Iterator[Chunk]:
        chunk = _ChunkBuilder(self.path)
        for lineno, record in self._records():
            label = self.label or record.get("word")
            if not isinstance(label, str) or not label:
                raise DataFormatError(
                    self.path, "no 'word' (class name) in the record", f"line {lineno}"
                )
            if not self.filter.take(label):
                if self.filter.done():
                    break
                continue
            drawing = parse_drawing(record.get("drawing"), self.path, f"line {lineno}")
            chunk.add(label, drawing, str(record.get("key_id", lineno)), record)
            if len(chunk) >= chunk_size:
                yield chunk.build()
                chunk = _ChunkBuilder(self.path)
        if len(chunk):
            yield chunk.build()

    def _records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        path = Path(self.path)
        lineno = 0
        try:
            with open_maybe_gzip(path) as raw:
                for lineno, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8"), 1):
                    if not line.strip():
                        continue
                    yield lineno, _parse_json_line(line, path, lineno)
        except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
            raise DataFormatError(path, f"corrupt gzip data after line {lineno} ({exc})") from None
        except UnicodeDecodeError:
            raise DataFormatError(path, "not UTF-8 text", f"line {lineno + 1}") from None


def _parse_json_line(line: str, path: Path, lineno: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"not valid JSON ({exc.msg})", f"line {lineno}") from None
    if not isinstance(record, dict):
        raise DataFormatError(path, "expected a JSON object", f"line {lineno}")
    if "drawing" not in record:
        raise DataFormatError(path, "no 'drawing' in the record", f"line {lineno}")
    return record


def parse_drawing(strokes: object, path: str | Path, where: str) -> Drawing:
    """Validate Quick, Draw! strokes ``[[x...], [y...](, [t...])]`` -> list of (n, 2|3) float32."""
    if not isinstance(strokes, list) or not strokes:
        raise DataFormatError(path, "'drawing' must be a non-empty list of strokes", where)
    drawing: Drawing = []
    total = 0
    for k, stroke in enumerate(strokes):
        if not isinstance(stroke, list) or len(stroke) not in (2, 3):
            raise DataFormatError(
                path, f"stroke {k} must be [[x...], [y...]] or [[x...], [y...], [t...]]", where
            )
        lengths = {len(c) if isinstance(c, list) else -1 for c in stroke}
        if len(lengths) != 1 or -1 in lengths or 0 in lengths:
            raise DataFormatError(
                path, f"stroke {k}: x, y (and t) must be non-empty lists of equal length", where
            )
        try:
            arr = np.asarray(stroke, dtype=np.float32).T
        except (TypeError, ValueError):
            raise DataFormatError(path, f"stroke {k}: coordinates must be numbers", where) from None
        if not np.all(np.isfinite(arr)):
            raise DataFormatError(path, f"stroke {k}: coordinates must be finite numbers", where)
        total += len(arr)
        drawing.append(np.ascontiguousarray(arr))
    if total > MAX_POINTS_PER_DRAWING:
        raise DataFormatError(
            path, f"{total} points is more than the limit of {MAX_POINTS_PER_DRAWING}", where
        )
    return drawing


class _ChunkBuilder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.labels: list[str] = []
        self.drawings: list[Drawing] = []
        self.ids: list[str] = []
        self.raw = False

    def __len__(self) -> int:
        return len(self.labels)

    def add(self, label: str, drawing: Drawing, key: str, record: dict[str, Any]) -> None:
        self.labels.append(label)
        self.drawings.append(drawing)
        self.ids.append(key)
        self.raw = self.raw or drawing[0].shape[1] == 3

    def build(self) -> Chunk:
        return Chunk(
            labels=self.labels,
            source=self.source,
            strokes=self.drawings,
            stroke_kind="raw" if self.raw else "simplified",
            ids=self.ids,
        )


class BinarySource:
    """Quick, Draw! ``.bin`` files (simplified strokes packed as bytes), one class per file."""

    format = "quickdraw-bin"

    def __init__(
        self,
        path: str | Path,
        *,
        categories: list[str] | None = None,
        per_class: int | None = None,
        label: str | None = None,
    ) -> None:
        self.path = str(path)
        self.label = label or label_from_filename(self.path, ("full_binary_",))
        self.filter = LabelFilter(categories, per_class)

    def classes(self) -> list[str] | None:
        return [self.label]

    def iter_chunks(self, chunk_size: int = 4096) -> Iterator[Chunk]:
        if not self.filter.wants(self.label):
            return
        chunk = _ChunkBuilder(self.path)
        with open_maybe_gzip(Path(self.path)) as f:
            for index, (key, drawing) in enumerate(iter_binary_drawings(f, self.path)):
                if not self.filter.take(self.label):
                    break
                chunk.add(self.label, drawing, str(key or index), {})
                if len(chunk) >= chunk_size:
                    yield chunk.build()
                    chunk = _ChunkBuilder(self.path)
        if len(chunk):
            yield chunk.build()


def iter_binary_drawings(f: IO[bytes], path: str) -> Iterator[tuple[int, Drawing]]:
    """Yield (key_id, drawing) from an open ``.bin`` stream; raise on truncation."""
    index = 0
    while True:
        header = f.read(_BIN_HEADER.size)
        if not header:
            return
        where = f"drawing {index}"
        if len(header) < _BIN_HEADER.size:
            raise DataFormatError(path, "truncated record header", where)
        key_id, _country, _recognized, _timestamp, n_strokes = _BIN_HEADER.unpack(header)
        drawing: Drawing = []
        for k in range(n_strokes):
            n_raw = f.read(2)
            if len(n_raw) < 2:
                raise DataFormatError(path, f"truncated in stroke {k}", where)
            (n_points,) = struct.unpack("<H", n_raw)
            xy = f.read(2 * n_points)
            if len(xy) < 2 * n_points:
                raise DataFormatError(path, f"truncated in stroke {k}", where)
            points = np.frombuffer(xy, dtype=np.uint8).reshape(2, n_points).T.astype(np.float32)
            drawing.append(points)
        if not drawing or not any(len(s) for s in drawing):
            raise DataFormatError(path, "drawing has no points", where)
        yield key_id, [s for s in drawing if len(s)]
        index += 1
