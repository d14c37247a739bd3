from __future__ import annotations

import numpy as np
import pytest

from imgclass.data.sequences import pad_sequences, stroke3_to_drawing, to_stroke3, to_stroke5

DRAWING = [
    np.array([[0, 0], [10, 0], [10, 5]], np.float32),
    np.array([[20, 20], [25, 30]], np.float32),
]


def test_stroke3_hand_computed():
    s3 = to_stroke3(DRAWING, scale=1.0)
    expected = [[0, 0, 0], [10, 0, 0], [0, 5, 1], [10, 15, 0], [5, 10, 1]]
    np.testing.assert_array_equal(s3, expected)


def test_stroke3_round_trip():
    back = stroke3_to_drawing(to_stroke3(DRAWING))
    assert len(back) == 2
    for a, b in zip(back, DRAWING, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_stroke5_flags_and_end_row():
    s5 = to_stroke5(DRAWING, scale=1.0)
    assert s5.shape == (6, 5)
    np.testing.assert_array_equal(
        s5[:, 2:], [[1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    )
    assert np.abs(to_stroke5(DRAWING)[:, :2]).max() <= 1.0


def test_padding_truncation_and_lengths():
    seqs = [to_stroke5(DRAWING), to_stroke5(DRAWING[:1])]
    batch, lengths = pad_sequences(seqs, max_len=5)
    assert batch.shape == (2, 5, 5)
    np.testing.assert_array_equal(lengths, [5, 4])
    np.testing.assert_array_equal(batch[1, 4], [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(batch[0], seqs[0][:5])
    with pytest.raises(ValueError):
        pad_sequences([], 3)
