"""What makes two submissions the same: a normalised form of the input and its hash; and
what a label may be."""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
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


# Characters that show nothing: Unicode's Default_Ignorable_Code_Point (the Hangul fillers,
# zero-width spaces and joiners, bidi controls, variation selectors, tags...) and U+2800
# BRAILLE PATTERN BLANK. Categories Cc, Cf, Cs, Co, Cn, Zl and Zp are refused as well.
_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
    (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x206F), (0x2800, 0x2800), (0x3164, 0x3164), (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip
_REFUSED_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "a format character",
    "Cs": "a surrogate",
    "Co": "a private-use character",
    "Cn": "not an assigned character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}


def normalise_label(label: str) -> str:
    """The NFKC form of a label: full-width ``３`` is ``3``, ``ﬁ`` is ``fi``, a
    no-break space is a space; what looks the same is stored the same."""
    return unicodedata.normalize("NFKC", label)


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot be stored (empty or blank, or a control, format or invisible
    character, named with its code point), or None."""
    if not label.strip():
        return "a label must not be empty or blank"
    for ch in label:
        code = ord(ch)
        why = _REFUSED_CATEGORIES.get(unicodedata.category(ch))
        if why is None and any(lo <= code <= hi for lo, hi in _INVISIBLE_RANGES):
            why = "an invisible character"
        if why is not None:
            name = unicodedata.name(ch, "")
            return f"U+{code:04X}{' ' + name if name else ''} is {why}"
    return None
