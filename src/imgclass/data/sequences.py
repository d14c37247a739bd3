"""Strokes to sequences for recurrent models: stroke-3 and stroke-5, as in sketch-rnn.

stroke-3 rows are (dx, dy, pen_lifted): the offset of each point from the previous one
(the first from the origin), and 1 on the last point of each stroke. stroke-5 rows are
(dx, dy, p1, p2, p3): pen down to the next point, pen lifted after this point, end of
the drawing; one (0, 0, 0, 0, 1) row ends the drawing and padding repeats it.

Offsets are divided by ``scale``, by default 255, the side of Google's simplified space:
a fixed factor (not a statistic of some training set) keeps one drawing's encoding
independent of any other, and puts the offsets of simplified drawings in [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from imgclass.data.render import Drawing, check_drawing, simplify_raw
from imgclass.errors import ConfigError, DataFormatError

DEFAULT_SCALE = 255.0
FORMATS = ("stroke3", "stroke5")


def to_stroke3(drawing: Drawing, scale: float = DEFAULT_SCALE) -> np.ndarray:
    """A drawing as float32 (n_points, 3): (dx, dy, pen_lifted), offsets divided by ``scale``."""
    _check_scale(scale)
    strokes = check_drawing(drawing)
    points = np.vstack(strokes)
    deltas = np.diff(points, axis=0, prepend=np.zeros((1, 2)))
    lifted = np.zeros(len(points))
    lifted[np.cumsum([len(s) for s in strokes]) - 1] = 1.0
    return np.column_stack([deltas / scale, lifted]).astype(np.float32)


def stroke3_to_drawing(seq: np.ndarray, scale: float = DEFAULT_SCALE) -> list[np.ndarray]:
    """Inverse of ``to_stroke3``: float32 strokes (n_points, 2) of absolute x, y.

    seq: array (n, 3). Points after the last lifted pen form a final stroke.
    """
    _check_scale(scale)
    seq = np.asarray(seq, dtype=np.float64)
    if seq.ndim != 2 or seq.shape[1] != 3:
        raise DataFormatError("<sequence>", f"stroke-3 needs shape (n, 3), not {seq.shape}")
    points = np.cumsum(seq[:, :2] * scale, axis=0)
    ends = np.flatnonzero(seq[:, 2] > 0.5) + 1
    return [p.astype(np.float32) for p in np.split(points, ends) if len(p)]


def to_stroke5(drawing: Drawing, scale: float = DEFAULT_SCALE) -> np.ndarray:
    """A drawing as float32 (n_points + 1, 5): (dx, dy, p1, p2, p3), then (0, 0, 0, 0, 1)."""
    s3 = to_stroke3(drawing, scale)
    out = np.zeros((len(s3) + 1, 5), dtype=np.float32)
    out[:-1, :2] = s3[:, :2]
    out[:-1, 2] = 1.0 - s3[:, 2]
    out[:-1, 3] = s3[:, 2]
    out[-1, 4] = 1.0
    return out


def pad_sequences(seqs: Sequence[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack sequences into float32 (n, max_len, F), cut at ``max_len``; lengths int64 (n,).

    Padding rows are zeros, except stroke-5 (F == 5) padding, which is (0, 0, 0, 0, 1) as
    in sketch-rnn. ``padding_mask(lengths, max_len)`` marks the real steps.
    """
    if isinstance(max_len, bool) or not isinstance(max_len, int | np.integer) or max_len < 1:
        raise ConfigError(f"max_len must be a whole number of at least 1, not {max_len!r}")
    if len(seqs) == 0:
        raise DataFormatError("<sequences>", "there are no sequences to pad")
    widths = {np.shape(s)[1] if np.ndim(s) == 2 else -1 for s in seqs}
    if len(widths) != 1 or -1 in widths:
        raise DataFormatError("<sequences>", "sequences must all be 2-D with the same width")
    width = int(widths.pop())
    out = np.zeros((len(seqs), max_len, width), dtype=np.float32)
    if width == 5:
        out[:, :, 4] = 1.0
    lengths = np.array([min(len(s), max_len) for s in seqs], dtype=np.int64)
    for i, (seq, n) in enumerate(zip(seqs, lengths, strict=True)):
        out[i, :n] = seq[:n]
    return out, lengths


def padding_mask(lengths: np.ndarray, max_len: int) -> np.ndarray:
    """bool (n, max_len): True on the real steps of each padded sequence."""
    return np.arange(max_len)[None, :] < np.asarray(lengths)[:, None]


def encode_drawings(
    drawings: Sequence[Drawing], fmt: str = "stroke5", max_len: int = 200, raw: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Drawings to what sequence models read: float32 (n, max_len, 3 or 5), lengths int64 (n,).

    With ``raw``, strokes in any range (a canvas, raw ndjson) are simplified first, so a
    canvas drawing and a dataset drawing give the same sequence.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown sequence format {fmt!r}; use one of {', '.join(FORMATS)}")
    encode = to_stroke5 if fmt == "stroke5" else to_stroke3
    return pad_sequences([encode(simplify_raw(d) if raw else d) for d in drawings], max_len)


def _check_scale(scale: float) -> None:
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale must be a positive number, not {scale}")
