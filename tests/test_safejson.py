"""imgclass.safejson: JSON from outside, with bounded nesting and one error type."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgclass import safejson
from imgclass.safejson import JSONRefused, deeper_than, loads, nesting_depth


def depth(value: object) -> int:
    """The reference: nesting of a parsed value, by recursion."""
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


# strings full of brackets, quotes and backslashes: what could fool a scan of the text
tricky = st.text(alphabet='[]{}"\\ab,:\n\u00e9')
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | tricky,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky, inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    value=values,
    ascii=st.booleans(),
    indent=st.sampled_from([None, 1]),
    chunk=st.sampled_from([1, 2, 3, 7, safejson._CHUNK]),
)
def test_depth_of_the_text_is_the_depth_of_the_value(value, ascii, indent, chunk):
    """Also with the scan's chunks as small as one mark, so that strings and escapes
    straddle chunk boundaries."""
    text = json.dumps(value, ensure_ascii=ascii, indent=indent).encode()
    with mock.patch.object(safejson, "_CHUNK", chunk):
        assert nesting_depth(text) == depth(value)
        assert not deeper_than(text, depth(value))
        assert deeper_than(text, depth(value) - 1) or depth(value) == 0
    assert loads(text, max_depth=max(depth(value), 1)) == json.loads(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 64 levels"),
        (b"[" * 100_000, "nested deeper than 64 levels"),
        (b'{"a": [' + b"9" * 5000 + b"]}", "a number at character 8 has more than 4300 digits"),
        (b"[NaN]", "NaN is not a JSON number"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
        (b"\xff[]", "not UTF-8 text"),
        (b'{"a": 1', "not valid JSON (Expecting ',' delimiter at line 1 column 8)"),
    ],
)
def test_what_json_loads_would_raise_or_accept_is_refused_with_a_reason(text, message):
    with pytest.raises(JSONRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        loads(text)


def test_brackets_in_strings_and_escapes_do_not_count():
    deep_text = json.dumps({"label": "[" * 1000, "q": '\\"[[[' * 100}).encode()
    assert nesting_depth(deep_text) == 1 and loads(deep_text)["label"] == "[" * 1000
    assert nesting_depth(b'["\\\\", ' + b"[" * 70 + b"]" * 70 + b"]") == 71
    assert loads(b"[NaN]", allow_nan=True) != [0]  # NaN, allowed for files that hold it
