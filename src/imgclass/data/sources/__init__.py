"""Readers for every input format: one module per family of formats.

``open_source(path)`` picks the reader from the file name (or ``format=``) and
returns a ``Source`` that streams ``Chunk`` objects with bounded memory.

| format | reader | what |
|---|---|---|
| ``quickdraw-npy`` | ``quickdraw.NpyBitmapSource`` | Google's ``<category>.npy`` bitmaps |
| ``quickdraw-ndjson`` | ``ndjson.NdjsonSource`` | simplified or raw strokes, plain or .gz |
| ``quickdraw-bin`` | ``quickdraw.BinarySource`` | Google's packed binary strokes |
| ``sketchrnn-npz`` | ``sketchrnn.SketchRnnSource`` | stroke-3 train/valid/test |
| ``mnist-idx`` | ``mnist.IdxSource`` | IDX images + labels, plain or .gz |
| ``mnist-csv`` | ``mnist.CsvSource`` | label, then 784 pixels per line |
| ``npz`` | ``npz.NpzSource`` | ``x``/``y``/``classes`` or ``x_train``/``y_train``/... |
| ``imagefolder`` | ``imagefolder.ImageFolderSource`` | a subfolder of images per class |
| ``stanford-dogs`` | ``imagefolder.StanfordDogsSource`` | ``Images/`` + ``Annotation/`` |
"""

from __future__ import annotations

import inspect
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

_BY_SUFFIX = (
    (".ndjson", "quickdraw-ndjson"),
    (".jsonl", "quickdraw-ndjson"),
    (".bin", "quickdraw-bin"),
    (".csv", "mnist-csv"),
)


def detect_format(path: str | Path) -> str:
    """Guess the format of ``path`` from its name (and, for folders and .npz, a peek inside)."""
    p = Path(path)
    if not p.exists():
        raise DataFormatError(p, "no such file or folder")
    if p.is_dir():
        return _detect_dir_format(p)
    name = p.name.lower()
    gz = name.endswith(".gz")
    name = name.removesuffix(".gz")
    if name.endswith((".npy", ".npz")) and gz:
        raise DataFormatError(p, "gzipped numpy files are not read directly; gunzip it first")
    for suffix, fmt in _BY_SUFFIX:
        if name.endswith(suffix):
            return fmt
    if "idx1-ubyte" in name or "idx3-ubyte" in name or name.endswith((".idx", "-ubyte")):
        return "mnist-idx"
    if name.endswith(".npy"):
        return "quickdraw-npy"
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
    from imgclass.data.sources import imagefolder, mnist, ndjson, npz, quickdraw, sketchrnn

    return {
        "quickdraw-npy": quickdraw.NpyBitmapSource,
        "quickdraw-ndjson": ndjson.NdjsonSource,
        "quickdraw-bin": quickdraw.BinarySource,
        "sketchrnn-npz": sketchrnn.SketchRnnSource,
        "mnist-idx": mnist.IdxSource,
        "mnist-csv": mnist.CsvSource,
        "npz": npz.NpzSource,
        "imagefolder": imagefolder.ImageFolderSource,
        "stanford-dogs": imagefolder.StanfordDogsSource,
    }


def open_source(path: str | Path, format: str | None = None, **options: Any) -> Source:
    """Open ``path`` as a source of labelled examples.

    Options common to every format: ``categories`` (names to keep) and ``per_class``
    (keep at most N per class, the first in file order); ``label`` (class name for
    single-class files: Quick, Draw! npy/ndjson/bin, sketch-rnn); ``limits``
    (``imgclass.data.limits.ReadLimits``: what a file may make the reader allocate);
    image folders also take ``skip_bad`` and ``min_side``, Stanford Dogs
    ``crop_to_box``, MNIST CSV ``split``. An option the format does not take raises ``ConfigError``; a missing
    or malformed input raises ``DataFormatError``.
    """
    if not Path(path).exists():
        raise DataFormatError(path, "no such file or folder")
    fmt = format or detect_format(path)
    readers = _readers()
    if fmt not in readers:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    per_class = options.get("per_class")
    if per_class is not None and (
        isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1
    ):
        raise ConfigError(f"per_class must be a positive integer, got {per_class!r}")
    reader = readers[fmt]
    try:
        inspect.signature(reader).bind(path, **options)
    except TypeError as exc:
        raise ConfigError(f"format {fmt}: {exc}") from None
    return reader(path, **options)
