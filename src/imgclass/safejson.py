"""JSON text from outside (request bodies, ndjson lines), parsed without surprises.

``json.loads`` on text nobody checked can fail in more ways than ``JSONDecodeError``:
``RecursionError`` for arrays nested past the interpreter's recursion limit,
``ValueError`` for an integer of more than 4,300 digits (Python's limit on converting
digits to int), ``UnicodeDecodeError`` for bytes that are not UTF-8. It also accepts
``NaN`` and ``Infinity``, which JSON has not. ``loads`` turns each of these into one
``JSONRefused`` that says what is wrong, and refuses nesting deeper than ``max_depth``
before parsing: a structure a thousand levels deep that the parser still copes with
would break the first code that walks it recursively (repr, validation, json.dumps).
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import numpy as np

MAX_DEPTH = 64  # arrays and objects; a Quick, Draw! record is 4 deep, a batch request 6

# one step up or down per bracket, for the depth scan, which reads only these and quotes
_STEP = np.zeros(256, np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
_NOT_MARKS = bytes(b for b in range(256) if b not in b'[]{}"')
_DIGITS = re.compile(rb"\d+")


class JSONRefused(ValueError):
    """Text that is not JSON we accept; the message says why, for people."""


def loads(data: bytes, *, max_depth: int = MAX_DEPTH, allow_nan: bool = False) -> Any:
    """Parse UTF-8 JSON ``data``; ``JSONRefused`` when it is invalid, nested deeper than
    ``max_depth``, holds an integer too long to read, or (unless ``allow_nan``) holds
    ``NaN``/``Infinity``."""
    depth = nesting_depth(data, stop_at=max_depth)
    if depth > max_depth:
        raise JSONRefused(f"nested deeper than {max_depth} levels of arrays and objects")
    try:
        return json.loads(data, parse_constant=None if allow_nan else _no_constant)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise JSONRefused(f"not valid JSON ({exc.msg} at {where})") from None
    except UnicodeDecodeError:
        raise JSONRefused("not UTF-8 text") from None
    except JSONRefused:
        raise
    except RecursionError:  # only when the interpreter's stack is nearly full already
        raise JSONRefused("nested too deep") from None
    except ValueError:  # int() of more than sys.get_int_max_str_digits() digits
        raise JSONRefused(_long_number_message(data)) from None


def nesting_depth(data: bytes, stop_at: int = 0) -> int:
    """How deep arrays and objects nest in JSON text ``data``; brackets inside strings do
    not count. Linear in ``len(data)`` whatever the text (C loops and numpy, no regular
    expression that could backtrack); not computed past the number of opening brackets
    when that is ``stop_at`` or less."""
    marks = data.translate(None, _NOT_MARKS)  # brackets and quotes only
    opening = marks.count(b"[") + marks.count(b"{")
    if opening <= stop_at:
        return opening
    if b"\\" in data:  # drop escaped backslashes, then escaped quotes (a run of
        # backslashes starts with an escape): every quote left opens or closes a string
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
        marks = data.translate(None, _NOT_MARKS)
    codes = np.frombuffer(marks, np.uint8)
    steps = _STEP[codes]
    if b'"' in marks:  # an odd count of quotes so far: inside a string, brackets are text
        inside = np.bitwise_xor.accumulate((codes == ord('"')).view(np.uint8))
        steps[inside.view(bool)] = 0
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def _no_constant(name: str) -> Any:
    raise JSONRefused(f"{name} is not a JSON number")


def _long_number_message(data: bytes) -> str:
    limit = sys.get_int_max_str_digits()
    found = next((m for m in _DIGITS.finditer(data) if len(m.group()) > limit), None)
    where = f" at character {found.start() + 1}" if found else ""
    return f"a number{where} has more than {limit} digits"
