"""Readers for every input format: one module per family of formats.

``open_source(path)`` picks the reader from the file name (or ``format=``) and
returns a ``Source`` that streams ``Chunk`` objects with bounded memory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgclass.data.sources.base import Chunk, Drawing, Source
from imgclass.errors import ConfigError, DataFormatError

FORMATS = (
    "quickdraw-npy",
    "quickdraw-ndjson",
    "quickdraw-bin",
    "sketchrnn-npz",
    "mnist-idx",
    "mnist-csv",
    "npz",
    "imagefolder",
    "stanford-dogs",
)

__all__ = ["FORMATS", "Chunk", "Drawing", "Source", "detect_format", "open_source"]


def detect_format(path: str | Path) -> str:
    """Guess the format of ``path`` from its name (and, for folders and .npz, a peek inside)."""
    p = Path(path)
    if not p.exists():
        raise DataFormatError(p, "no such file or folder")
    if p.is_dir():
        return _detect_dir_format(p)
    name = p.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".npy"):
        return "quickdraw-npy"
    if name.endswith(".ndjson") or name.endswith(".jsonl"):
        return "quickdraw-ndjson"
    if name.endswith(".bin"):
        return "quickdraw-bin"
    if name.endswith(".csv"):
        return "mnist-csv"
    if "idx1-ubyte" in name or "idx3-ubyte" in name or name.endswith((".idx", "-ubyte")):
        return "mnist-idx"
    if name.endswith(".npz"):
        from imgclass.data.sources.npz import npz_keys

        keys = set(npz_keys(p))
        return "sketchrnn-npz" if {"train", "valid", "test"} & keys else "npz"
    raise DataFormatError(
        p, f"cannot tell the format from the name; pass --format ({', '.join(FORMATS)})"
    )


def _detect_dir_format(p: Path) -> str:
    if (p / "Images").is_dir():
        return "stanford-dogs"
    names = [c.name.lower() for c in p.iterdir() if c.is_file()]
    if any("idx3-ubyte" in n for n in names):
        return "mnist-idx"
    return "imagefolder"


def _readers() -> dict[str, Callable[..., Source]]:
    from imgclass.data.sources import imagefolder, mnist, npz, quickdraw

    return {
        "quickdraw-npy": quickdraw.NpyBitmapSource,
        "quickdraw-ndjson": quickdraw.NdjsonSource,
        "quickdraw-bin": quickdraw.BinarySource,
        "sketchrnn-npz": npz.SketchRnnSource,
        "mnist-idx": mnist.IdxSource,
        "mnist-csv": mnist.CsvSource,
        "npz": npz.NpzSource,
        "imagefolder": imagefolder.ImageFolderSource,
        "stanford-dogs": imagefolder.StanfordDogsSource,
    }


def open_source(path: str | Path, format: str | None = None, **options: Any) -> Source:
    """Open ``path`` as a source of labelled examples.

    Options common to every format: ``categories`` (names to keep), ``per_class``
    (keep at most N per class, the first in file order) and ``label`` (class name for
    single-class files). Unknown options raise ``ConfigError``.
    """
    fmt = format or detect_format(path)
    readers = _readers()
    if fmt not in readers:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    try:
        return readers[fmt](path, **options)
    except TypeError as exc:
        raise ConfigError(f"format {fmt}: {exc}") from exc
