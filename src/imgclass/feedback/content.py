"""What makes two submissions the same: a normalised form of the input and its hash."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from imgclass.errors import FeedbackError


def normalise_strokes(strokes: Any) -> list[list[list[float | int]]]:
    """Strokes ``[[x...], [y...](, [t...])]`` with every number as an int when it is whole
    and a float otherwise, so ``1`` and ``1.0`` are the same drawing. FeedbackError for
    anything that is not a list of strokes of finite numbers."""
    if not isinstance(strokes, list) or not strokes:
        raise FeedbackError("strokes must be a non-empty list of [[x...], [y...]] strokes")
    out = []
    for k, stroke in enumerate(strokes):
        if not isinstance(stroke, list) or len(stroke) not in (2, 3):
            raise FeedbackError(f"stroke {k} must be [[x...], [y...]] or [[x...], [y...], [t...]]")
        out.append([[_number(v, k) for v in _column(c, k)] for c in stroke])
        if len({len(c) for c in out[-1]}) != 1 or not out[-1][0]:
            raise FeedbackError(f"stroke {k}: x, y (and t) must be non-empty lists of equal length")
    return out


def _column(column: Any, k: int) -> list[Any]:
    if not isinstance(column, list):
        raise FeedbackError(f"stroke {k}: x, y (and t) must be lists of numbers")
    return column


def _number(value: Any, k: int) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FeedbackError(f"stroke {k}: coordinates must be numbers, got {value!r}")
    try:
        v = float(value)
    except OverflowError:  # an integer of hundreds of digits
        v = math.inf
    if not math.isfinite(v):
        raise FeedbackError(f"stroke {k}: coordinates must be finite numbers")
    return int(v) if v.is_integer() and abs(v) < 2**53 else v


def strokes_to_json(strokes: list[Any]) -> str:
    """The compact, canonical JSON text of normalised strokes (what is stored and hashed)."""
    return json.dumps(strokes, separators=(",", ":"))


def content_hash(label: str, strokes_json: str | None, image: bytes | None) -> str:
    """sha256 (hex) of the normalised input and the label: the de-duplication key."""
    h = hashlib.sha256()
    h.update(b"strokes\0" + (strokes_json or "").encode())
    h.update(b"\0image\0" + hashlib.sha256(image or b"").digest())
    h.update(b"\0label\0" + label.encode())
    return h.hexdigest()
