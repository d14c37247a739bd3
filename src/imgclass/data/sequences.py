"""Strokes to sequences for recurrent models: stroke-3 and stroke-5 (as in sketch-rnn).

stroke-3 rows are (dx, dy, pen_lifted): the offset from the previous point and 1 on
the last point of each stroke. stroke-5 rows are (dx, dy, p1, p2, p3): pen down,
pen lifted after this point, end of drawing; padding rows are (0, 0, 0, 0, 1).
Offsets are divided by ``scale`` (default 255, the side of the simplified space),
so they lie in [-1, 1] for simplified drawings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from imgclass.data.render import Drawing, check_drawing

DEFAULT_SCALE = 255.0


def to_stroke3(drawing: Drawing, scale: float = DEFAULT_SCALE) -> np.ndarray:
    """A drawing as float32 (n_points, 3): (dx, dy, pen_lifted); the first offset is from (0, 0)."""
    strokes = check_drawing(drawing)
    points = np.vstack(strokes)
    deltas = np.diff(points, axis=0, prepend=np.zeros((1, 2)))
    lifted = np.zeros(len(points))
    lifted[np.cumsum([len(s) for s in strokes]) - 1] = 1.0
    out = np.column_stack([deltas / scale, lifted])
    return out.astype(np.float32)


def stroke3_to_drawing(seq: np.ndarray, scale: float = DEFAULT_SCALE) -> list[np.ndarray]:
    """Inverse of ``to_stroke3``: absolute float32 (n, 2) strokes."""
    seq = np.asarray(seq, dtype=np.float64)
    points = np.cumsum(seq[:, :2] * scale, axis=0)
    ends = np.flatnonzero(seq[:, 2] > 0.5) + 1
    return [p.astype(np.float32) for p in np.split(points, ends) if len(p)]


def to_stroke5(drawing: Drawing, scale: float = DEFAULT_SCALE) -> np.ndarray:
    """A drawing as float32 (n_points + 1, 5): stroke-3 plus an end-of-drawing row."""
    s3 = to_stroke3(drawing, scale)
    out = np.zeros((len(s3) + 1, 5), dtype=np.float32)
    out[:-1, :2] = s3[:, :2]
    out[:-1, 2] = 1.0 - s3[:, 2]
    out[:-1, 3] = s3[:, 2]
    out[-1, 4] = 1.0
    return out


def encode_drawings(
    drawings: Sequence[Drawing], fmt: str = "stroke5", max_len: int = 200, raw: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Drawings -> padded sequences (n, max_len, 3|5) and lengths, the way models see them.

    Raw strokes (any range, with time) are simplified first, so a canvas drawing and a
    dataset drawing give the same sequence."""
    from imgclass.data.render import simplify_raw

    encode = to_stroke5 if fmt == "stroke5" else to_stroke3
    seqs = [encode(simplify_raw(d) if raw else d) for d in drawings]
    return pad_sequences(seqs, max_len)


def pad_sequences(seqs: Sequence[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack sequences to float32 (n, max_len, F), truncated at ``max_len``; lengths int64 (n,).

    Padding rows are zeros, except that stroke-5 padding (F == 5) is (0, 0, 0, 0, 1).
    ``mask = arange(max_len) < lengths[:, None]`` marks the real steps.
    """
    if not seqs:
        raise ValueError("no sequences to pad")
    features = seqs[0].shape[1]
    out = np.zeros((len(seqs), max_len, features), dtype=np.float32)
    if features == 5:
        out[:, :, 4] = 1.0
    lengths = np.zeros(len(seqs), dtype=np.int64)
    for i, seq in enumerate(seqs):
        n = min(len(seq), max_len)
        out[i, :n] = seq[:n]
        lengths[i] = n
    return out, lengths
