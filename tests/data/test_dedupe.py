"""Content keys of images (``dedupe.content_keys``): the same image always the same key
within a prepare, different images (pixels or shape) different keys."""

from __future__ import annotations

import numpy as np

from imgclass.data.dedupe import KEY_MASK, VECTOR_BYTES, content_keys


def test_the_same_bitmap_gets_the_same_key_in_any_chunk_and_a_changed_pixel_another():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (500, 28, 28), dtype=np.uint8)
    changed = x.copy()
    rows, cols = rng.integers(0, 28, 500), rng.integers(0, 28, 500)
    changed[np.arange(500), rows, cols] ^= rng.integers(1, 256, 500, dtype=np.uint8)
    keys = content_keys(np.concatenate([x, changed]), None)
    assert len(np.unique(keys)) == 1000  # one pixel changed: always another key
    np.testing.assert_array_equal(content_keys(x[250:], None), keys[250:500])  # any chunk
    assert not (keys & ~KEY_MASK).any()  # the low bits are left for the split tag


def test_the_shape_is_part_of_the_key():
    flat = np.zeros((1, 28, 28), np.uint8)
    keys = [content_keys(flat.reshape(s), None)[0] for s in [(1, 28, 28), (1, 14, 56),
            (1, 28, 28, 1)]]  # fmt: skip
    assert len(set(keys)) == 3
    odd = [content_keys(np.zeros((1, 3, n), np.uint8), None)[0] for n in (3, 4)]
    assert odd[0] != odd[1]  # zero padding to whole words does not make them equal


def test_photos_get_the_same_key_alone_or_in_a_batch():
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    big = rng.integers(0, 256, (2, 160, 160, 3), dtype=np.uint8)  # past VECTOR_BYTES
    assert big[0].nbytes > VECTOR_BYTES >= small[0].nbytes
    for batch in (small, big):
        alone = content_keys([batch[0], batch[1], batch[0]], None)
        np.testing.assert_array_equal(alone, content_keys(batch, None)[[0, 1, 0]])
        assert alone[0] != alone[1]
