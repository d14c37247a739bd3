"""Small file helpers shared by the readers: gzip-or-plain opening and exact reads."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from imgclass.data.limits import ReadLimits
from imgclass.errors import DataFormatError

GZIP_MAGIC = b"\x1f\x8b"
# What reading a damaged gzip stream raises: bad header or CRC, bad deflate data, cut short.
GZIP_ERRORS = (gzip.BadGzipFile, zlib.error, EOFError)


def is_gzip(path: str | Path) -> bool:
    """Whether ``path`` is gzip data: by its ``.gz`` name, else by its first two bytes.

    A ``.gz`` name always means gzip (so a damaged one is reported as corrupt gzip);
    other names are sniffed, so ``full_raw_cat.ndjson`` that was saved gzipped still reads.
    """
    p = Path(path)
    if p.name.lower().endswith(".gz"):
        return True
    with open(p, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def open_maybe_gzip(path: str | Path) -> IO[bytes]:
    """Open a file for binary reading, transparently gunzipping gzip data."""
    if is_gzip(path):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def read_exact(f: IO[bytes], size: int, path: str | Path, where: str | None, what: str) -> bytes:
    """Read exactly ``size`` bytes or raise ``DataFormatError`` saying ``what`` was cut short."""
    data = f.read(size)
    if len(data) != size:
        raise DataFormatError(
            path, f"truncated {what}: expected {size} bytes, found {len(data)}", where
        )
    return data


def read_array(
    f: IO[bytes],
    shape: tuple[int, ...],
    dtype: np.dtype[Any] | type,
    path: str | Path,
    where: str | None,
    what: str,
) -> np.ndarray:
    """Read a C-ordered array of ``shape`` straight into new (writable) memory.

    Raises ``DataFormatError`` saying ``what`` was cut short when the stream ends early.
    """
    out = np.empty(shape, dtype=dtype)
    view = out.data.cast("B")
    filled = 0
    while filled < len(view):
        n = f.readinto(view[filled:])  # type: ignore[attr-defined]
        if not n:
            raise DataFormatError(
                path, f"truncated {what}: expected {len(view)} bytes, found {filled}", where
            )
        filled += n
    return out


def corrupt_gzip(path: str | Path, exc: BaseException, where: str | None = None) -> DataFormatError:
    """The error for a damaged gzip stream (bad header, bad data or cut short)."""
    reason = str(exc) or type(exc).__name__
    return DataFormatError(path, f"corrupt gzip data ({reason})", where)


def read_npy_header(
    f: IO[bytes], path: str | Path, where: str | None = None
) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Read a ``.npy`` header from an open stream: (shape, fortran_order, dtype).

    Leaves the stream at the first data byte. Nothing is unpickled here.
    """
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:  # 2.0 and 3.0 share the layout (a 4-byte header length)
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    except (ValueError, OSError, SyntaxError, EOFError) as exc:
        raise DataFormatError(path, f"not a valid .npy array ({exc})", where) from None
    return tuple(int(d) for d in shape), bool(fortran), dtype


def check_declared_images(path: str | Path, dims: tuple[int, ...], limits: ReadLimits) -> None:
    """Check the images an array file declares, (n, rows, cols) bytes, before reading
    any: pixels per image, and for gzip data, how far the file would inflate."""
    n, rows, cols = dims
    limits.check_pixels(path, cols, rows)
    if is_gzip(path):
        limits.check_ratio(path, n * rows * cols, Path(path).stat().st_size, "the images")


def bounded_lines(text: IO[str], max_chars: int, path: str | Path) -> Iterator[str]:
    """The lines of a text stream; ``DataFormatError`` for one longer than ``max_chars``,
    raised before more than that is in memory."""
    lineno = 0
    while line := text.readline(max_chars + 1):
        lineno += 1
        if len(line) > max_chars:
            raise DataFormatError(
                path,
                f"line longer than {max_chars} characters (--max-line-bytes)",
                f"line {lineno}",
            )
        yield line
