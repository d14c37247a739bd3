"""Quick, Draw! ndjson: one JSON drawing per line, simplified or raw, plain or gzipped.

Each line holds ``word``, ``countrycode``, ``timestamp``, ``recognized``, ``key_id`` and
``drawing``: a list of strokes ``[[x...], [y...]]`` (simplified, 0..255) or
``[[x...], [y...], [t...]]`` (raw: canvas coordinates and milliseconds). A file may
hold any number of words (Google's files hold one; the shared sample holds 345).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imgclass.data.limits import DEFAULT_LIMITS, ReadLimits
from imgclass.data.sources.base import Chunk, Drawing, Reader, StrokeKind
from imgclass.data.sources.fileio import GZIP_ERRORS, corrupt_gzip, open_maybe_gzip
from imgclass.data.strokes import StrokesError, check_strokes
from imgclass.errors import DataFormatError
from imgclass.safejson import JSONRefused, loads

MAX_POINTS_PER_DRAWING = 100_000
# Real raw drawings are well under 1 MB a line; the cap keeps one bad line from filling memory.
MAX_LINE_BYTES = DEFAULT_LIMITS.max_line_bytes
STROKE_OVERHEAD = 100  # bytes a stroke costs beyond its points (Python and numpy objects)


class NdjsonSource(Reader):
    """Quick, Draw! ndjson strokes (simplified or raw), one class per ``word``.

    Chunks carry ``strokes`` (no images), ``ids`` from ``key_id`` and, in ``meta``,
    the per-drawing lists ``recognized`` and ``countrycode``. A file must not mix
    simplified and raw drawings. A chunk holds at most ``chunk_size`` drawings and,
    but for one, at most ``limits.chunk_bytes`` of points; a line may be at most
    ``limits.max_line_bytes`` long.
    """

    format = "quickdraw-ndjson"

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
        self.label = label

    def classes(self) -> list[str] | None:
        return [self.label] if self.label else None

    def iter_chunks(self, chunk_size: int = 4096) -> Iterator[Chunk]:
        filt = self.label_filter()
        chunk = _StrokeChunk(self.path)
        kind: StrokeKind | None = None
        lines = iter_json_lines(Path(self.path), self.limits.max_line_bytes)
        for lineno, record in lines:
            where = f"line {lineno}"
            label = self.label or record.get("word")
            if not isinstance(label, str) or not label:
                raise DataFormatError(self.path, "no 'word' (class name) in the record", where)
            if not filt.take(label):
                if filt.done():
                    break
                continue
            drawing = parse_drawing(record["drawing"], self.path, where)
            this_kind: StrokeKind = "raw" if drawing[0].shape[1] == 3 else "simplified"
            if kind is not None and this_kind != kind:
                raise DataFormatError(
                    self.path, f"a {this_kind} drawing in a file of {kind} drawings", where
                )
            kind = this_kind
            chunk.add(label, drawing, str(record.get("key_id", lineno)), record)
            if filt.done():
                break  # every wanted class is full: read no further
            if len(chunk) >= chunk_size or chunk.nbytes >= self.limits.chunk_bytes:
                yield chunk.build(kind)
                chunk = _StrokeChunk(self.path)
        if len(chunk) and kind is not None:
            yield chunk.build(kind)


def iter_json_lines(
    path: Path, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-blank line; every record has a ``drawing``."""
    lineno = 0
    try:
        with open_maybe_gzip(path) as f:
            while line := f.readline(max_line_bytes + 1):
                lineno += 1
                if len(line) > max_line_bytes:
                    raise DataFormatError(
                        path,
                        f"line longer than {max_line_bytes} bytes (--max-line-bytes)",
                        f"line {lineno}",
                    )
                if line.strip():
                    yield lineno, parse_json_line(line, path, lineno)
    except GZIP_ERRORS as exc:
        raise corrupt_gzip(path, exc, f"after line {lineno}") from None


def parse_json_line(line: bytes, path: str | Path, lineno: int) -> dict[str, Any]:
    """One ndjson line -> its record; ``DataFormatError`` naming the line when unusable."""
    where = f"line {lineno}"
    try:  # nesting and huge integers are refused, not a RecursionError or ValueError
        record = loads(line, allow_nan=True)
    except JSONRefused as exc:
        raise DataFormatError(path, str(exc), where) from None
    if not isinstance(record, dict):
        raise DataFormatError(path, "expected a JSON object", where)
    if "drawing" not in record:
        raise DataFormatError(path, "no 'drawing' in the record", where)
    return record


def parse_drawing(strokes: object, path: str | Path, where: str) -> Drawing:
    """Validate strokes ``[[x...], [y...](, [t...])]`` -> list of float32 (n_points, 2|3).

    The strict check of ``imgclass.data.strokes`` (the API's too): every stroke of a
    drawing has the same number of lists (2 or 3), all of the same non-zero length,
    holding finite numbers (not strings or booleans); the fault is named by its place,
    ``drawing[2][0][5]``.
    """
    try:
        return check_strokes(strokes, name="drawing", max_points=MAX_POINTS_PER_DRAWING)
    except StrokesError as exc:
        raise DataFormatError(path, str(exc), where) from None


class _StrokeChunk:
    """Collects drawings (and their ids and per-drawing metadata) into one ``Chunk``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.labels: list[str] = []
        self.drawings: list[Drawing] = []
        self.ids: list[str] = []
        self.recognized: list[bool | None] = []
        self.countrycode: list[str | None] = []
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.labels)

    def add(self, label: str, drawing: Drawing, key: str, record: dict[str, Any]) -> None:
        self.labels.append(label)
        self.drawings.append(drawing)
        self.nbytes += sum(s.nbytes + STROKE_OVERHEAD for s in drawing)
        self.ids.append(key)
        recognized = record.get("recognized")
        country = record.get("countrycode")
        self.recognized.append(recognized if isinstance(recognized, bool) else None)
        self.countrycode.append(country if isinstance(country, str) else None)

    def build(self, kind: StrokeKind) -> Chunk:
        return Chunk(
            labels=self.labels,
            source=self.source,
            strokes=self.drawings,
            stroke_kind=kind,
            ids=self.ids,
            meta={"recognized": self.recognized, "countrycode": self.countrycode},
        )
