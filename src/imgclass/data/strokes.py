"""Strokes from outside (a request body, an ndjson line), checked strictly before use.

A drawing is a non-empty list of strokes. A stroke is two lists ``[[x...], [y...]]`` or
three ``[[x...], [y...], [t...]]`` (t in ms), of the same non-zero length, holding
numbers only: JSON integers and floats, never booleans, strings or null; finite, small
enough for float32, and x and y within ``limit`` when one is given. Every stroke of a
drawing has the same form. The one definition serves the API (``/v1/predict``, its batch
items and ``/v1/feedback``) and the ndjson reader, so they accept the same drawings.

A refusal names the place of the fault below the drawing's name, as people write it:
``strokes[2][0][5]: must be a number, not a string``.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np

FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMBERS = frozenset({int, float})  # exact types: bool, a subclass of int, is no number
FORMS = "[[x...], [y...]] or [[x...], [y...], [t...]]"


class StrokesError(ValueError):
    """Strokes that are not a drawing; ``where`` is the place (``strokes[2][0]``),
    ``reason`` what is wrong there, ``too_large`` whether a size limit was passed."""

    def __init__(self, where: str, reason: str, *, too_large: bool = False) -> None:
        super().__init__(f"{where}: {reason}")
        self.where, self.reason, self.too_large = where, reason, too_large


def check_strokes(
    strokes: Any,
    *,
    name: str = "strokes",
    max_strokes: int | None = None,
    max_points: int | None = None,
    limit: float | None = None,
) -> list[np.ndarray]:
    """Strokes as parsed from JSON -> float32 arrays (n_points, 2|3), one per stroke;
    ``StrokesError`` naming the first fault. Sizes are checked before any conversion."""
    if type(strokes) is not list or not strokes:
        raise StrokesError(name, f"must be a non-empty list of strokes {FORMS}")
    if max_strokes is not None and len(strokes) > max_strokes:
        raise StrokesError(name, f"{len(strokes)} strokes; at most {max_strokes}", too_large=True)
    total = 0
    for k, stroke in enumerate(strokes):
        _check_shape(stroke, f"{name}[{k}]")
        if len(stroke) != len(strokes[0]):
            raise StrokesError(
                f"{name}[{k}]",
                f"strokes mix [x, y] and [x, y, t] forms ({len(stroke)} lists here, "
                f"{len(strokes[0])} in {name}[0])",
            )
        total += len(stroke[0])
        if max_points is not None and total > max_points:
            raise StrokesError(name, f"more than {max_points} points", too_large=True)
    return [_to_points(stroke, f"{name}[{k}]", limit) for k, stroke in enumerate(strokes)]


def _check_shape(stroke: Any, where: str) -> None:
    """Two or three lists of numbers, of one non-zero length."""
    if type(stroke) is not list or len(stroke) not in (2, 3):
        raise StrokesError(where, f"must be {FORMS}")
    for c, column in enumerate(stroke):
        if type(column) is not list:
            raise StrokesError(f"{where}[{c}]", f"must be a list of numbers, not {_kind(column)}")
    if not stroke[0] or any(len(column) != len(stroke[0]) for column in stroke):
        raise StrokesError(where, "x, y (and t) must be non-empty lists of equal length")
    if not _NUMBERS.issuperset(map(type, chain.from_iterable(stroke))):
        c, i = next(
            (c, i)
            for c, col in enumerate(stroke)
            for i, v in enumerate(col)
            if type(v) not in _NUMBERS
        )
        raise StrokesError(f"{where}[{c}][{i}]", f"must be a number, not {_kind(stroke[c][i])}")


def _to_points(stroke: list[list[Any]], where: str, limit: float | None) -> np.ndarray:
    """A checked stroke -> float32 (n, 2|3); a number out of range named by its place."""
    bounds = [FLOAT32_MAX if limit is None else limit] * 2 + [FLOAT32_MAX] * (len(stroke) - 2)
    try:
        values = np.array(stroke, dtype=np.float64)  # (2|3, n)
    except OverflowError:  # an int beyond float64: find it for the message
        c, i = next((c, i) for c, col in enumerate(stroke) for i, v in enumerate(col) if _huge(v))
        raise StrokesError(f"{where}[{c}][{i}]", _beyond(bounds[c])) from None
    xy_ok = np.abs(values[:2]).max() <= bounds[0]  # NaN compares False: not ok
    if not (xy_ok and (len(stroke) == 2 or np.abs(values[2]).max() <= FLOAT32_MAX)):
        bad = ~(np.abs(values) <= np.array(bounds)[:, None])
        c, i = (int(v) for v in np.argwhere(bad)[0])
        if not np.isfinite(values[c, i]):
            raise StrokesError(f"{where}[{c}][{i}]", "must be a finite number")
        raise StrokesError(f"{where}[{c}][{i}]", _beyond(bounds[c]))
    return np.ascontiguousarray(values.T, dtype=np.float32)


def _beyond(bound: float) -> str:
    text = f"{bound:,.0f}" if bound < 1e15 else f"{bound:.3g}"
    return f"must be between -{text} and {text}"


def _huge(value: Any) -> bool:
    try:
        float(value)
    except OverflowError:
        return True
    return False


def _kind(value: Any) -> str:
    """What a JSON value is, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
