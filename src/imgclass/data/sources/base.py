"""What every input-format reader yields: chunks of labelled examples.

A *drawing* is a list of strokes; a stroke is a float32 array of shape
(n_points, 2) holding (x, y), or (n_points, 3) holding (x, y, t) with t in
milliseconds (raw Quick, Draw! data). Simplified Quick, Draw! strokes use the
0..255 coordinate space; raw strokes use the canvas's own coordinates.

Readers stream: they never load a whole large file into memory, and they raise
``imgclass.errors.DataFormatError`` naming the file (and line or index) at the
first bad record.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from imgclass.data.limits import DEFAULT_LIMITS, ReadLimits

Drawing = list[np.ndarray]
StrokeKind = Literal["simplified", "raw"]
# The order in which a source with its own splits yields them: its own test and valid
# parts before its training part, so that prepare, which keeps the first copy of a
# duplicate, keeps the copy in the source's own test split.
OWN_SPLITS_FIRST = ("test", "valid", "train")


@dataclass
class Chunk:
    """A batch of examples from one source file, in file order.

    labels: class name of each example, length n.
    images: uint8 array of shape (n, H, W) (grayscale) or (n, H, W, 3) (RGB),
        or a list of n such arrays of varying sizes (photos), or None when the
        source holds strokes only.
    strokes: one ``Drawing`` per example, or None.
    stroke_kind: "simplified" (0..255, RDP-simplified) or "raw" (any range,
        with timing) when strokes are present.
    split: "train", "valid" or "test" when the source defines its own split
        (MNIST's t10k files, sketch-rnn's keys); None otherwise.
    ids: an identifier per example (key_id, file name, index), or None.
    ink: "white-on-black" (ink = 255 on 0, like MNIST and Quick, Draw! bitmaps),
        "black-on-white", or "unknown".
    """

    labels: list[str]
    source: str
    images: np.ndarray | list[np.ndarray] | None = None
    strokes: list[Drawing] | None = None
    stroke_kind: StrokeKind | None = None
    split: str | None = None
    ids: list[str] | None = None
    ink: str = "white-on-black"
    meta: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


class Source(Protocol):
    """A readable input file (or folder) in one format."""

    path: str
    format: str

    def classes(self) -> list[str] | None:
        """Class names if known without reading the data, else None."""

    def iter_chunks(self, chunk_size: int = 4096) -> Iterator[Chunk]:
        """Yield the examples in file order, at most ``chunk_size`` at a time; a source
        with its own splits yields them in ``OWN_SPLITS_FIRST`` order."""


class LabelFilter:
    """Applies the ``categories`` and ``per_class`` options while streaming.

    Keeps the first ``per_class`` examples of each wanted class in file order.
    """

    def __init__(self, categories: list[str] | None = None, per_class: int | None = None) -> None:
        if per_class is not None and per_class < 1:
            raise ValueError(f"per_class must be at least 1, got {per_class}")
        self.categories = set(categories) if categories else None
        self.per_class = per_class
        self.counts: dict[str, int] = {}

    def wants(self, label: str) -> bool:
        """Whether a class is wanted at all (before counting)."""
        return self.categories is None or label in self.categories

    def full(self, label: str) -> bool:
        return self.per_class is not None and self.counts.get(label, 0) >= self.per_class

    def done(self, known: list[str] | None = None) -> bool:
        """True when every wanted class reached ``per_class`` (so a reader may stop early)."""
        if self.per_class is None:
            return False
        names = self.categories or (set(known) if known else set())
        return bool(names) and all(self.full(n) for n in names)

    def take(self, label: str) -> bool:
        """Count and keep one example of ``label`` if wanted and not over the limit."""
        if not self.wants(label) or self.full(label):
            return False
        self.counts[label] = self.counts.get(label, 0) + 1
        return True


def label_from_filename(path: str, prefixes: tuple[str, ...] = ()) -> str:
    """``full_numpy_bitmap_cat.npy`` -> ``cat``; ``smiley face.ndjson.gz`` -> ``smiley face``."""
    from pathlib import Path

    name = Path(path).name
    for suffix in (".gz", ".npy", ".ndjson", ".jsonl", ".bin", ".npz"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    for prefix in prefixes:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name


class Reader:
    """What every reader keeps of the options ``open_source`` passes it: the file, the
    wanted ``categories``, ``per_class`` and the read ``limits``. ``per_class`` is
    checked here, when the reader is made, not mid-stream."""

    path: str

    def __init__(
        self,
        path: str | Path,
        *,
        categories: list[str] | None = None,
        per_class: int | None = None,
        limits: ReadLimits | None = None,
    ) -> None:
        self.path = str(path)
        self.categories = categories
        self.per_class = per_class
        self.limits = limits or DEFAULT_LIMITS
        LabelFilter(categories, per_class)  # validates per_class now

    def label_filter(self) -> LabelFilter:
        """A fresh filter for one pass over the file."""
        return LabelFilter(self.categories, self.per_class)
