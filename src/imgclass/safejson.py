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
from collections.abc import Iterator
from typing import Any

import numpy as np

MAX_DEPTH = 64  # arrays and objects; a Quick, Draw! record is 4 deep, a batch request 6

# one step up or down per bracket, for the depth scan, which reads only these and quotes
_STEP = np.zeros(256, np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
_NOT_MARKS = bytes(b for b in range(256) if b not in b'[]{}"')
_DIGITS = re.compile(rb"\d+")
_CHUNK = 1 << 18  # marks scanned at a time: a deep body is refused after its first chunk


class JSONRefused(ValueError):
    """Text that is not JSON we accept; the message says why, for people."""


def loads(data: bytes, *, max_depth: int = MAX_DEPTH, allow_nan: bool = False) -> Any:
    """Parse UTF-8 JSON ``data``; ``JSONRefused`` when it is invalid, nested deeper than
    ``max_depth``, holds an integer too long to read, or (unless ``allow_nan``) holds
    ``NaN``/``Infinity``."""
    if deeper_than(data, max_depth):
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


def nesting_depth(data: bytes) -> int:
    """How deep arrays and objects nest in JSON text ``data``; brackets inside strings do
    not count."""
    return max(_peaks(_marks(data)), default=0)


def deeper_than(data: bytes, limit: int) -> bool:
    """Whether arrays and objects in JSON text ``data`` nest deeper than ``limit``. Linear
    in ``len(data)`` whatever the text (C loops and numpy, no regular expression that could
    backtrack), and it stops reading where the depth first passes ``limit``."""
    marks = data.translate(None, _NOT_MARKS)
    if marks.count(b"[") + marks.count(b"{") <= limit:
        return False
    return any(peak > limit for peak in _peaks(_marks(data, marks)))


def _marks(data: bytes, marks: bytes | None = None) -> bytes:
    """The brackets and the string-delimiting quotes of ``data``, in order."""
    if b"\\" in data:  # drop escaped backslashes, then escaped quotes (a run of
        # backslashes starts with an escape): every quote left opens or closes a string
        return data.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_MARKS)
    return data.translate(None, _NOT_MARKS) if marks is None else marks


def _peaks(marks: bytes) -> Iterator[int]:
    """The deepest nesting within each successive chunk of ``marks``."""
    depth, inside = 0, 0  # at the end of the chunks so far: depth, and within a string?
    for start in range(0, len(marks), _CHUNK):
        codes = np.frombuffer(marks, np.uint8, min(_CHUNK, len(marks) - start), start)
        steps = _STEP[codes].astype(np.int64)
        quotes = (codes == ord('"')).view(np.uint8)
        if inside or quotes.any():  # an odd count of quotes so far: brackets are text
            strings = np.bitwise_xor.accumulate(quotes) ^ inside
            steps[strings.view(bool)] = 0
            inside = int(strings[-1])
        running = np.cumsum(steps) + depth
        depth = int(running[-1])
        yield int(running.max())


def _no_constant(name: str) -> Any:
    raise JSONRefused(f"{name} is not a JSON number")


def _long_number_message(data: bytes) -> str:
    limit = sys.get_int_max_str_digits()
    found = next((m for m in _DIGITS.finditer(data) if len(m.group()) > limit), None)
    where = f" at character {found.start() + 1}" if found else ""
    return f"a number{where} has more than {limit} digits"
