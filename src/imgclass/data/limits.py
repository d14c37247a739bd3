"""How much one input may make a reader allocate: the guard against files that declare
far more than they hold.

A 223-byte pickle can ask numpy for an array of three billion objects, a 4 MB zip can
inflate to 4 GB, a 1.6 MB PNG can decode to 150 MB. Every reader therefore checks what
a file *declares* (an array header's shape, a zip member's uncompressed size, an image
header's width and height, a line's length) against these limits before it allocates
anything, and reads in chunks of at most ``chunk_bytes``, so memory stays bounded
whatever the input. The defaults are far above any real dataset of the supported
kinds (see each field); ``imgclass data prepare`` takes flags to raise them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from imgclass.errors import ConfigError, DataFormatError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass(frozen=True)
class ReadLimits:
    """Limits on what one input file may make a reader allocate.

    max_image_pixels: pixels (width x height) of one image, checked from the image's
        header before decoding, or from an array's declared shape; a 7000 x 7000
        photo (49M) passes, Pillow's own guard (89M, then 179M) stays as a second one.
    max_array_bytes: bytes of an array read whole into memory: labels and class
        names of an ``.npz``, a sketch-rnn split (its pickle and the arrays it
        rebuilds). A standard sketch-rnn split (70,000 drawings) costs about 140 MB.
    max_compression_ratio: uncompressed over compressed size of a streamed array (an
        ``.npz`` member, a gzipped IDX file). Real image arrays stay under 160 (1 px
        binary lines at 1024 x 1024), MNIST is 5; deflate's ceiling is about 1030,
        so a zip bomb sits near it.
    max_line_bytes: one line of ndjson or CSV (real raw drawings are well under 1 MB).
    max_points: points of one drawing (ndjson, ``.bin``, one sketch-rnn sequence).
    chunk_bytes: decoded input bytes a reader hands over at once.
    """

    max_image_pixels: int = 50_000_000
    max_array_bytes: int = 512 << 20
    max_compression_ratio: float = 500.0
    max_line_bytes: int = 16 << 20
    max_points: int = 100_000
    chunk_bytes: int = 16 << 20

    def __post_init__(self) -> None:
        for name in (
            "max_image_pixels",
            "max_array_bytes",
            "max_compression_ratio",
            "max_line_bytes",
            "max_points",
            "chunk_bytes",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")

    def check_pixels(
        self, path: str | Path, width: int, height: int, where: str | None = None
    ) -> None:
        """Refuse an image of more than ``max_image_pixels`` before it is decoded."""
        check_pixels(path, width, height, self.max_image_pixels, where)

    def check_array_bytes(self, path: str | Path, nbytes: int, what: str) -> None:
        """Refuse to read an array of ``nbytes`` whole, before allocating it."""
        if nbytes > self.max_array_bytes:
            raise DataFormatError(
                path,
                f"{what} needs {format_bytes(nbytes)}, more than the limit of "
                f"{format_bytes(self.max_array_bytes)} for an array read whole "
                "(--max-array-bytes)",
            )

    def check_ratio(self, path: str | Path, uncompressed: int, compressed: int, what: str) -> None:
        """Refuse data that would inflate more than real image data does (a zip bomb)."""
        ratio = uncompressed / max(compressed, 1)
        if ratio > self.max_compression_ratio:
            raise DataFormatError(
                path,
                f"{what} would inflate from {format_bytes(compressed)} to "
                f"{format_bytes(uncompressed)} ({ratio:.0f} to 1, more than the limit of "
                f"{self.max_compression_ratio:g} to 1 of real image data; "
                "--max-compression-ratio)",
            )

    def rows_per_chunk(self, row_bytes: int, wanted: int) -> int:
        """Rows of ``row_bytes`` each to read at once: at most ``wanted`` and, but for a
        single row, at most ``chunk_bytes``."""
        return max(1, min(wanted, self.chunk_bytes // max(row_bytes, 1)))


DEFAULT_LIMITS = ReadLimits()


def check_pixels(
    path: str | Path, width: int, height: int, limit: int, where: str | None = None
) -> None:
    """``DataFormatError`` for an image of more than ``limit`` pixels."""
    if width * height > limit:
        raise DataFormatError(
            path,
            f"{width}x{height} is more than the limit of {limit:,} pixels (--max-image-pixels)",
            where,
        )


def format_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``: sizes in messages."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def parse_bytes(text: str) -> int:
    """``"512M"`` -> 536870912; plain integers are bytes; K, M, G, T are powers of 1024."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 1000000, 512M, 2G)")
    value = int(float(match[1]) * _UNITS[match[2].upper()])
    if value < 1:
        raise ValueError(f"a size must be at least 1 byte, got {text!r}")
    return value
