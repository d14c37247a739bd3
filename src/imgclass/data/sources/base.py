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
from typing import Literal, Protocol

import numpy as np

Drawing = list[np.ndarray]
StrokeKind = Literal["simplified", "raw"]


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
        """Yield the examples in file order, at most ``chunk_size`` at a time."""
