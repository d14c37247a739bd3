"""MNIST: the IDX files (gzipped or not) and the CSV form (label, then 784 pixels).

IDX: big-endian magic 0x00000803 for images (n, rows, cols) and 0x00000801 for
labels (n,), then the data. ``t10k-*`` (or ``*test*``) files are the official test
split, the others the training split. Both names Yann LeCun's site uses
(``train-images-idx3-ubyte``) and the dotted form (``train-images.idx3-ubyte``)
are understood. Images and labels are read in lockstep, a chunk at a time.

Labels are numbers (0..255 in IDX, any integer in CSV): MNIST's digits, but also
Fashion-MNIST's or EMNIST's classes, which ``prepare --class-names`` names.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import struct
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO

import numpy as np

from imgclass.data.limits import ReadLimits
from imgclass.data.sources.base import Chunk, Reader
from imgclass.data.sources.fileio import (
    GZIP_ERRORS,
    bounded_lines,
    check_declared_images,
    corrupt_gzip,
    is_gzip,
    open_maybe_gzip,
    read_exact,
)
from imgclass.errors import DataFormatError

log = logging.getLogger(__name__)

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_IMAGES_NAME = re.compile(r"images([.-])idx3([.-])ubyte", re.IGNORECASE)
_LABELS_NAME = re.compile(r"labels([.-])idx1([.-])ubyte", re.IGNORECASE)


def read_idx_header(f: IO[bytes], path: Path, magic: int) -> tuple[int, ...]:
    """Check an IDX file's magic number and return its dimensions."""
    kind = "images" if magic == IMAGES_MAGIC else "labels"
    head = _read(f, 4, path, None, "IDX header", exact=False)
    if len(head) < 4:
        raise DataFormatError(path, f"too short to be an IDX {kind} file")
    (found,) = struct.unpack(">I", head)
    if found != magic:
        raise DataFormatError(
            path, f"wrong magic number 0x{found:08x}; an IDX {kind} file starts with 0x{magic:08x}"
        )
    ndim = magic & 0xFF
    return struct.unpack(f">{ndim}I", _read(f, 4 * ndim, path, None, "IDX header"))


def _read(
    f: IO[bytes], size: int, path: Path, where: str | None, what: str, exact: bool = True
) -> bytes:
    """Read from an IDX stream, naming this file when its gzip data is damaged."""
    try:
        return read_exact(f, size, path, where, what) if exact else f.read(size)
    except GZIP_ERRORS as exc:
        raise corrupt_gzip(path, exc, where) from None


def _check_plain_size(path: Path, dims: tuple[int, ...]) -> None:
    """For uncompressed files, refuse a wrong size before reading any data."""
    if is_gzip(path):
        return  # known only at the end of the stream
    expected = 4 + 4 * len(dims) + int(np.prod(dims))
    actual = path.stat().st_size
    if actual != expected:
        state = "truncated" if actual < expected else "too long"
        raise DataFormatError(
            path, f"{state}: dimensions {dims} need {expected} bytes, the file has {actual}"
        )


def find_idx_pairs(path: Path) -> list[tuple[Path, Path, str]]:
    """(images file, labels file, split) for an images or labels file, or a folder of them."""
    if path.is_dir():
        candidates = sorted(p for p in path.iterdir() if _IMAGES_NAME.search(p.name))
    elif _LABELS_NAME.search(path.name):
        candidates = [_partner(path, _LABELS_NAME, "images", "idx3")]
    else:
        candidates = [path]
    pairs: dict[str, tuple[Path, Path, str]] = {}
    for images in candidates:
        key = images.name.lower().removesuffix(".gz")
        if key in pairs:  # both x and x.gz: read one
            log.info("ignoring %s: %s holds the same data", images, pairs[key][0].name)
            continue
        labels = _partner(images, _IMAGES_NAME, "labels", "idx1")
        split = "test" if key.startswith("t10k") or "test" in key else "train"
        pairs[key] = (images, labels, split)
    if not pairs:
        raise DataFormatError(path, "no MNIST images file (*-images-idx3-ubyte[.gz]) found")
    # The official test pairs first: prepare keeps the first copy of a duplicate, and a
    # copy in the official test split is the one to keep.
    return sorted(pairs.values(), key=lambda pair: pair[2] != "test")


def _partner(path: Path, pattern: re.Pattern[str], kind: str, idx: str) -> Path:
    """The labels file beside an images file, or the other way round (gzipped or not)."""
    name = pattern.sub(lambda m: f"{kind}{m[1]}{idx}{m[2]}ubyte", path.name)
    base = name[:-3] if name.lower().endswith(".gz") else name
    for candidate in (path.with_name(base), path.with_name(base + ".gz")):
        if candidate != path and candidate.exists():
            return candidate
    raise DataFormatError(path, f"no matching {kind} file {base}[.gz] beside it")


class IdxSource(Reader):
    """MNIST IDX images + labels; ``path`` is either file or a folder with the pairs.

    Chunks hold ``images`` uint8 (k, rows, cols), labels (the numbers as text, ``"0"``
    to ``"9"`` for MNIST), the split (``"train"``, or ``"test"`` for ``t10k`` files) and
    ids ``"<split>:<index>"``. The test pairs come first.
    """

    format = "mnist-idx"

    def __init__(
        self,
        path: str | Path,
        *,
        categories: list[str] | None = None,
        per_class: int | None = None,
        limits: ReadLimits | None = None,
    ) -> None:
        super().__init__(path, categories=categories, per_class=per_class, limits=limits)
        self.pairs = find_idx_pairs(Path(path))

    def classes(self) -> list[str] | None:
        return None  # known only once the labels are read: not always MNIST's ten digits

    def iter_chunks(self, chunk_size: int = 4096) -> Iterator[Chunk]:
        for images_path, labels_path, split in self.pairs:
            yield from self._pair_chunks(images_path, labels_path, split, chunk_size)

    def _pair_chunks(
        self, images_path: Path, labels_path: Path, split: str, chunk_size: int
    ) -> Iterator[Chunk]:
        filt = self.label_filter()  # per_class counts per split
        with ExitStack() as stack:
            fx = stack.enter_context(open_maybe_gzip(images_path))
            fy = stack.enter_context(open_maybe_gzip(labels_path))
            n, rows, cols = _pair_header(fx, fy, images_path, labels_path)
            check_declared_images(images_path, (n, rows, cols), self.limits)
            chunk_size = self.limits.rows_per_chunk(rows * cols, chunk_size)
            for start in range(0, n, chunk_size):
                if filt.done():  # with categories: the classes wanted are all full
                    return
                count = min(chunk_size, n - start)
                x, y = _read_rows(fx, fy, images_path, labels_path, start, count, rows * cols)
                keep = np.fromiter((filt.take(str(v)) for v in y), dtype=bool, count=count)
                if keep.any():
                    idx = np.flatnonzero(keep)
                    yield Chunk(
                        labels=[str(v) for v in y[idx]],
                        source=str(images_path),
                        images=x[idx].reshape(-1, rows, cols),
                        split=split,
                        ids=[f"{split}:{start + i}" for i in idx],
                    )
            _check_at_end(fx, images_path)
            _check_at_end(fy, labels_path)


def _pair_header(
    fx: IO[bytes], fy: IO[bytes], images_path: Path, labels_path: Path
) -> tuple[int, int, int]:
    n, rows, cols = read_idx_header(fx, images_path, IMAGES_MAGIC)
    (n_labels,) = read_idx_header(fy, labels_path, LABELS_MAGIC)
    if n_labels != n:
        raise DataFormatError(
            labels_path, f"{n_labels} labels for {n} images in {images_path.name}"
        )
    _check_plain_size(images_path, (n, rows, cols))
    _check_plain_size(labels_path, (n,))
    return n, rows, cols


def _read_rows(
    fx: IO[bytes],
    fy: IO[bytes],
    images_path: Path,
    labels_path: Path,
    start: int,
    count: int,
    pixels: int,
) -> tuple[np.ndarray, np.ndarray]:
    where = f"image {start}"
    x = np.frombuffer(_read(fx, count * pixels, images_path, where, "image data"), np.uint8)
    y = np.frombuffer(_read(fy, count, labels_path, f"label {start}", "label data"), np.uint8)
    return x.reshape(count, pixels), y


def _check_at_end(f: IO[bytes], path: Path) -> None:
    if _read(f, 1, path, None, "", exact=False):
        raise DataFormatError(path, "more data than its dimensions say")


class CsvSource(Reader):
    """MNIST as CSV: label in the first column, then 784 pixel values 0..255.

    A first line whose first cell is not an integer is taken as a header. A name
    containing ``test`` (``mnist_test.csv``) makes the chunks the test split, else
    the split is left to prepare (or given with ``split=``); ids are line numbers.
    """

    format = "mnist-csv"

    def __init__(
        self,
        path: str | Path,
        *,
        categories: list[str] | None = None,
        per_class: int | None = None,
        split: str | None = None,
        limits: ReadLimits | None = None,
    ) -> None:
        super().__init__(path, categories=categories, per_class=per_class, limits=limits)
        name = Path(path).name.lower()
        # Only "test" is taken from the name: a lone train.csv (Kaggle's form) must still
        # be split three ways by prepare.
        self.split = split or ("test" if "test" in name else None)

    def classes(self) -> list[str] | None:
        return None

    def iter_chunks(self, chunk_size: int = 4096) -> Iterator[Chunk]:
        filt = self.label_filter()
        labels: list[str] = []
        rows: list[np.ndarray] = []
        ids: list[str] = []
        for lineno, label, pixels in self._rows():
            if not filt.take(label):
                continue
            labels.append(label)
            rows.append(pixels)
            ids.append(f"line {lineno}")
            if len(rows) >= chunk_size:
                yield self._chunk(labels, rows, ids)
                labels, rows, ids = [], [], []
        if rows:
            yield self._chunk(labels, rows, ids)

    def _chunk(self, labels: list[str], rows: list[np.ndarray], ids: list[str]) -> Chunk:
        images = np.stack(rows).reshape(-1, 28, 28)
        return Chunk(labels=labels, source=self.path, images=images, split=self.split, ids=ids)

    def _rows(self) -> Iterator[tuple[int, str, np.ndarray]]:
        path = Path(self.path)
        lineno = 0
        try:
            with open_maybe_gzip(path) as raw:
                text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
                lines = bounded_lines(text, self.limits.max_line_bytes, path)
                for lineno, row in enumerate(csv.reader(lines), 1):
                    if not row or (lineno == 1 and not _is_int(row[0])):
                        continue  # blank line or header
                    yield lineno, *parse_csv_row(row, path, lineno)
        except GZIP_ERRORS as exc:
            raise corrupt_gzip(path, exc, f"after line {lineno}") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataFormatError(path, f"not CSV text ({exc})", f"line {lineno + 1}") from None


def _is_int(text: str) -> bool:
    return text.strip().lstrip("+-").isdigit()


def parse_csv_row(row: list[str], path: Path, lineno: int) -> tuple[str, np.ndarray]:
    """One CSV row -> (label, uint8 (784,) pixels); ``DataFormatError`` naming the line."""
    where = f"line {lineno}"
    if len(row) != 785:
        raise DataFormatError(
            path, f"expected a label and 784 pixels, found {len(row)} columns", where
        )
    try:
        values = np.array(row, dtype=np.int64)
    except ValueError:
        raise DataFormatError(path, "every column must be an integer", where) from None
    if values[1:].min() < 0 or values[1:].max() > 255:
        raise DataFormatError(path, "pixel values must be in 0..255", where)
    return str(values[0]), values[1:].astype(np.uint8)
