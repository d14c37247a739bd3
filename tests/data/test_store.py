"""The store: round trips, chunked random access, batches and atomic writing."""

from __future__ import annotations

import numpy as np
import pytest

from imgclass.data.store import PreparedDataset, StoreWriter
from imgclass.errors import DatasetError


def _write(path, n=5000, strokes=False):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 7, size=n)
    drawings = [
        [rng.random((k % 4 + 1, 3)).astype(np.float32) for k in range(i % 3 + 1)] for i in range(n)
    ]
    manifest = {
        "format_version": 1,
        "classes": list("abcdefg"),
        "image_shape": [28, 28],
        "recipe": {"name": "none"},
        "has_strokes": strokes,
    }
    with StoreWriter(path, (28, 28), with_strokes=strokes, point_dims=3) as w:
        w.append("train", images[:3000], labels[:3000], drawings[:3000] if strokes else None)
        w.append(
            "train", images[3000:4000], labels[3000:4000], drawings[3000:4000] if strokes else None
        )
        w.append("test", images[4000:], labels[4000:], drawings[4000:] if strokes else None)
        w.finish(manifest)
    return images, labels, drawings


def test_round_trip_and_random_access(tmp_path):
    images, labels, drawings = _write(tmp_path / "ds", strokes=True)
    with PreparedDataset.open(tmp_path / "ds") as ds:
        assert ds.splits == ["train", "test"] and ds.size("train") == 4000
        x, y = ds.load("train")
        np.testing.assert_array_equal(x, images[:4000])
        np.testing.assert_array_equal(y, labels[:4000])
        idx = np.array([3999, 5, 1337, 5, 0])
        np.testing.assert_array_equal(ds.images("train")[idx], images[idx])
        np.testing.assert_array_equal(ds.images("test")[10:20], images[4010:4020])
        np.testing.assert_array_equal(ds.images("test")[-1], images[-1])
        for split, offset, i in [("train", 0, 0), ("train", 0, 3001), ("test", 4000, 7)]:
            got = ds.strokes(split, i)
            want = drawings[offset + i]
            assert len(got) == len(want)
            for a, b in zip(got, want, strict=True):
                np.testing.assert_array_equal(a, b)
        with pytest.raises(IndexError):
            ds.images("test")[[1000]]


def test_batches_cover_every_example_once_and_repeat_with_the_seed(tmp_path):
    _write(tmp_path / "ds")
    with PreparedDataset.open(tmp_path / "ds") as ds:
        batches = list(ds.iter_batches("train", 256, shuffle=True, seed=3))
        seen = np.concatenate([b[2] for b in batches])
        assert sorted(seen.tolist()) == list(range(4000))
        assert not np.array_equal(seen, np.arange(4000))
        x, y = ds.load("train")
        for images, labels, idx in batches[:3]:
            np.testing.assert_array_equal(images, x[idx])
            np.testing.assert_array_equal(labels, y[idx])
        again = np.concatenate([b[2] for b in ds.iter_batches("train", 256, shuffle=True, seed=3)])
        np.testing.assert_array_equal(seen, again)
        other = np.concatenate([b[2] for b in ds.iter_batches("train", 256, shuffle=True, seed=4)])
        assert not np.array_equal(seen, other)
        dropped = list(ds.iter_batches("train", 256, drop_last=True))
        assert all(len(b[2]) == 256 for b in dropped) and len(dropped) == 4000 // 256


def test_a_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError), StoreWriter(out, (28, 28)) as w:
        w.append("train", np.zeros((3, 28, 28), np.uint8), np.zeros(3))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DatasetError, match="not a prepared dataset"):
        PreparedDataset.open(out)


def test_existing_output_needs_overwrite(tmp_path):
    _write(tmp_path / "ds")
    with pytest.raises(DatasetError, match="--overwrite"):
        StoreWriter(tmp_path / "ds", (28, 28))
