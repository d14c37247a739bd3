"""Stroke-3 / stroke-5 sequences: hand-computed values, sketch-rnn's own conversion, round
trips on real drawings, padding and errors."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from imgclass.data.render import simplify_raw
from imgclass.data.sequences import (
    encode_drawings,
    pad_sequences,
    padding_mask,
    stroke3_to_drawing,
    to_stroke3,
    to_stroke5,
)
from imgclass.errors import ConfigError, DataFormatError

DRAWING = [
    np.array([[0, 0], [10, 0], [10, 5]], np.float32),
    np.array([[20, 20], [25, 30]], np.float32),
]


def lines_to_strokes(lines):
    """sketch-rnn's utils.lines_to_strokes (polylines -> stroke-3), as published."""
    rows = [[0, 0, 0]]
    for line in lines:
        for i, point in enumerate(line):
            rows.append([point[0], point[1], 0 if i < len(line) - 1 else 1])
    strokes = np.array(rows, dtype=float)
    strokes[1:, 0:2] -= strokes[:-1, 0:2]
    return strokes[1:, :]


def to_big_strokes(stroke, max_len):
    """sketch-rnn's utils.to_big_strokes (stroke-3 -> padded stroke-5), as published."""
    result = np.zeros((max_len, 5), dtype=float)
    n = len(stroke)
    result[0:n, 0:2] = stroke[:, 0:2]
    result[0:n, 3] = stroke[:, 2]
    result[0:n, 2] = 1 - result[0:n, 3]
    result[n:, 4] = 1
    return result


@pytest.fixture(scope="module")
def real_drawings(shared_data):
    with gzip.open(shared_data / "quickdraw_strokes_raw.ndjson.gz", "rt") as f:
        lines = f.readlines()[::100]
    return [
        simplify_raw([np.asarray(s, np.float32).T for s in json.loads(line)["drawing"]])
        for line in lines
    ]


def test_stroke3_hand_computed():
    s3 = to_stroke3(DRAWING, scale=1.0)
    expected = [[0, 0, 0], [10, 0, 0], [0, 5, 1], [10, 15, 0], [5, 10, 1]]
    assert s3.dtype == np.float32
    np.testing.assert_array_equal(s3, expected)
    np.testing.assert_allclose(to_stroke3(DRAWING)[:, :2], np.array(expected)[:, :2] / 255)


def test_stroke5_hand_computed():
    s5 = to_stroke5(DRAWING, scale=5.0)
    expected = [
        [0, 0, 1, 0, 0],
        [2, 0, 1, 0, 0],
        [0, 1, 0, 1, 0],
        [2, 3, 1, 0, 0],
        [1, 2, 0, 1, 0],
        [0, 0, 0, 0, 1],
    ]
    np.testing.assert_array_equal(s5, expected)


def test_matches_sketch_rnn_conversion_on_real_drawings(real_drawings):
    for drawing in real_drawings:
        reference = lines_to_strokes(drawing)
        np.testing.assert_allclose(to_stroke3(drawing, scale=1.0), reference)
        padded, lengths = pad_sequences([to_stroke5(drawing, scale=1.0)], max_len=400)
        np.testing.assert_allclose(padded[0], to_big_strokes(reference, 400))
        assert lengths[0] == len(reference) + 1


def test_stroke3_round_trip_on_real_drawings(real_drawings):
    assert len(real_drawings) == 96
    for drawing in real_drawings:
        back = stroke3_to_drawing(to_stroke3(drawing))
        assert len(back) == len(drawing)
        for ours, original in zip(back, drawing, strict=True):
            # Integer coordinates come back exactly once float32 noise is rounded away.
            np.testing.assert_allclose(ours, original, atol=2e-3)
            np.testing.assert_array_equal(np.rint(ours), original)
        assert np.abs(to_stroke3(drawing)[:, :2]).max() <= 1.0


def test_truncated_sequence_keeps_its_partial_last_stroke():
    back = stroke3_to_drawing(to_stroke3(DRAWING, scale=1.0)[:4], scale=1.0)
    np.testing.assert_array_equal(back[0], DRAWING[0])
    np.testing.assert_array_equal(back[1], DRAWING[1][:1])


def test_padding_truncation_lengths_and_mask():
    long, short = to_stroke5(DRAWING), to_stroke5(DRAWING[:1])
    batch, lengths = pad_sequences([long, short], max_len=5)
    assert batch.shape == (2, 5, 5) and batch.dtype == np.float32
    np.testing.assert_array_equal(lengths, [5, 4])
    assert lengths.dtype == np.int64
    np.testing.assert_array_equal(batch[0], long[:5])
    np.testing.assert_array_equal(batch[1, :4], short)
    np.testing.assert_array_equal(batch[1, 4], [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(padding_mask(lengths, 5), [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    three, n = pad_sequences([to_stroke3(DRAWING[1:])], max_len=4)
    np.testing.assert_array_equal(three[0, 2:], np.zeros((2, 3)))
    np.testing.assert_array_equal(n, [2])


def test_encode_drawings_simplifies_raw_strokes_first():
    raw = [np.array([[100, 50, 0], [500, 50, 10], [500, 210, 20]], np.float32)]
    seqs, lengths = encode_drawings([raw], fmt="stroke5", max_len=8, raw=True)
    expected, _ = pad_sequences([to_stroke5(simplify_raw(raw))], 8)
    np.testing.assert_array_equal(seqs, expected)
    np.testing.assert_array_equal(lengths, [4])
    np.testing.assert_allclose(seqs[0, :3, :2] * 255, [[0, 0], [255, 0], [0, 102]], atol=1e-4)
    seqs3, _ = encode_drawings([DRAWING], fmt="stroke3", max_len=3)
    assert seqs3.shape == (1, 3, 3)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: to_stroke3([]), DataFormatError, "no strokes"),
        (lambda: to_stroke5([np.zeros((2, 4))]), DataFormatError, "stroke 0 must be"),
        (lambda: to_stroke3(DRAWING, scale=0.0), ConfigError, "scale"),
        (lambda: stroke3_to_drawing(np.zeros((3, 5))), DataFormatError, r"\(n, 3\)"),
        (lambda: pad_sequences([], 4), DataFormatError, "no sequences"),
        (lambda: pad_sequences([np.zeros((2, 3)), np.zeros((2, 5))], 4), DataFormatError, "width"),
        (lambda: pad_sequences([np.zeros((2, 3))], 0), ConfigError, "max_len"),
        (lambda: encode_drawings([DRAWING], fmt="stroke4"), ConfigError, "stroke3, stroke5"),
    ],
)
def test_bad_input_is_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()
