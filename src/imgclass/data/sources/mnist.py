"""MNIST: the IDX files (gzipped or not) and the CSV form (label, then 784 pixels).

IDX: big-endian magic 0x00000803 for images (n, rows, cols) and 0x00000801 for
labels (n,). ``t10k-*`` files are the official test split.
"""

from __future__ import annotations

import csv
import gzip
import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from imgclass.data.sources.base import Chunk, LabelFilter
from imgclass.data.sources.quickdraw import open_maybe_gzip
from imgclass.errors import DataFormatError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
DIGITS = [str(d) for d in range(10)]


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one IDX file fully (MNIST files are small) and check its magic and size."""
    try:
        with open_maybe_gzip(path) as f:
            data = f.read()
    except (gzip.BadGzipFile, zlib.error, EOFError, OSError) as exc:
        raise DataFormatError(path, f"cannot read: corrupt gzip data ({exc})") from None
    if len(data) < 4:
        raise DataFormatError(path, "too short to be an IDX file")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise DataFormatError(
            path, f"wrong magic number 0x{found:08x}; an IDX {kind} file starts with 0x{magic:08x}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataFormatError(
            path,
            f"size mismatch: dimensions {dims} need {expected} bytes, the file has {len(data)}",
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def find_idx_pairs(path: Path) -> list[tuple[Path, Path, str]]:
    """(images file, labels file, split) pairs for an images file or a folder holding them."""
    candidates = sorted(path.iterdir()) if path.is_dir() else [path]
    pairs = []
    for images in candidates:
        if "idx3-ubyte" not in images.name:
            continue
        labels = images.with_name(images.name.replace("images-idx3", "labels-idx1"))
        if not labels.exists():
            raise DataFormatError(images, f"no matching labels file {labels.name} beside it")
        split = "test" if images.name.startswith("t10k") else "train"
        pairs.append((images, labels, split))
    if not pairs:
        raise DataFormatError(path, "no MNIST images file (*-images-idx3-ubyte[.gz]) found")
    return pairs


class IdxSource:
    """MNIST IDX image + label files; ``path`` is an images file or a folder with the pairs."""

    format = "mnist-idx"

    def __init__(
        self,
        path: str | Path,
        *,
        categories: list[str] | None = None,
        per_class: int | None = None,
    ) -> None:
        self.path = str(path)
        self.pairs = find_idx_pairs(Path(path))
        self.categories = categories
        self.per_class = per_class

    def classes(self) -> list[str] | None:
        return DIGITS

    def iter_chunks(self, chunk_size: int = 4096) -> Iterator[Chunk]:
        for images_path, labels_path, split in self.pairs:
            images = read_idx(images_path, IMAGES_MAGIC)
            labels = read_idx(labels_path, LABELS_MAGIC)
            if len(images) != len(labels):
                raise DataFormatError(
                    labels_path,
                    f"{len(labels)} labels for {len(images)} images in {images_path.name}",
                )
            if labels.size and labels.max() > 9:
                raise DataFormatError(labels_path, f"label {labels.max()} is not a digit")
            keep = _keep_mask(labels, LabelFilter(self.categories, self.per_class))
            yield from _array_chunks(
                images[keep], labels[keep], str(images_path), split, chunk_size
            )


def _keep_mask(labels: np.ndarray, filt: LabelFilter) -> np.ndarray:
    if filt.categories is None and filt.per_class is None:
        return np.ones(len(labels), dtype=bool)
    return np.fromiter((filt.take(str(v)) for v in labels), dtype=bool, count=len(labels))


def _array_chunks(
    images: np.ndarray, labels: np.ndarray, source: str, split: str | None, chunk_size: int
) -> Iterator[Chunk]:
    for start in range(0, len(images), chunk_size):
        part = labels[start : start + chunk_size]
        yield Chunk(
            labels=[str(v) for v in part],
            source=source,
            images=np.ascontiguousarray(images[start : start + chunk_size]),
            split=split,
            ids=[str(i) for i in range(start, start + len(part))],
        )


class CsvSource:
    """MNIST as CSV: label in the first column, then 784 pixel values 0..255 (header optional)."""

    format = "mnist-csv"

    def __init__(
        self,
        path: str | Path,
        *,
        categories: list[str] | None = None,
        per_class: int | None = None,
        split: str | None = None,
    ) -> None:
        self.path = str(path)
        self.filter = LabelFilter(categories, per_class)
        name = Path(path).name.lower()
        self.split = split or ("test" if "test" in name else None)

    def classes(self) -> list[str] | None:
        return None

    def iter_chunks(self, chunk_size: int = 4096) -> Iterator[Chunk]:
        labels: list[str] = []
        rows: list[np.ndarray] = []
        for _lineno, label, pixels in self._rows():
            if not self.filter.take(label):
                continue
            labels.append(label)
            rows.append(pixels)
            if len(rows) >= chunk_size:
                yield self._chunk(labels, rows)
                labels, rows = [], []
        if rows:
            yield self._chunk(labels, rows)

    def _chunk(self, labels: list[str], rows: list[np.ndarray]) -> Chunk:
        images = np.stack(rows).reshape(-1, 28, 28)
        return Chunk(labels=labels, source=self.path, images=images, split=self.split)

    def _rows(self) -> Iterator[tuple[int, str, np.ndarray]]:
        path = Path(self.path)
        try:
            with open_maybe_gzip(path) as raw:
                reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8"))
                for lineno, row in enumerate(reader, 1):
                    if not row or (lineno == 1 and not row[0].strip().lstrip("-").isdigit()):
                        continue  # blank line or header
                    yield lineno, *_parse_csv_row(row, path, lineno)
        except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
            raise DataFormatError(path, f"corrupt gzip data ({exc})") from None


def _parse_csv_row(row: list[str], path: Path, lineno: int) -> tuple[str, np.ndarray]:
    where = f"line {lineno}"
    if len(row) != 785:
        raise DataFormatError(
            path, f"expected a label and 784 pixels, found {len(row)} columns", where
        )
    try:
        values = np.array([int(v) for v in row], dtype=np.int64)
    except ValueError:
        raise DataFormatError(path, "every column must be an integer", where) from None
    if values[1:].min() < 0 or values[1:].max() > 255:
        raise DataFormatError(path, "pixel values must be in 0..255", where)
    return str(values[0]), values[1:].astype(np.uint8)
