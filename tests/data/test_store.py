"""The store: round trips, chunked random access, batches and atomic writing.

Synthetic data only (random bitmaps and drawings): the store must give back exactly
what was written, whatever the values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for the plain-h5py check)
import numpy as np
import pytest

from imgclass.data.store import (
    MANIFEST,
    BatchPlan,
    PreparedDataset,
    StoreWriter,
    chunk_rows,
    manifest_hash,
)
from imgclass.errors import DatasetError

ROWS = chunk_rows((28, 28))  # 1337 bitmaps per chunk


def _drawing(rng, k, dims):
    return [rng.random((j % 4 + 1, dims)).astype(np.float32) for j in range(k % 3 + 1)]


def _write(path, n=5000, strokes=False, dims=3, appends=(3000, 1000)):
    """A store with `sum(appends)` train examples (written in pieces) and the rest as test."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 7, size=n)
    drawings = [_drawing(rng, i, dims) for i in range(n)]
    manifest = {
        "format_version": 1,
        "classes": list("abcdefg"),
        "image_shape": [28, 28],
        "recipe": {"name": "none"},
        "has_strokes": strokes,
    }
    bounds = np.cumsum([0, *appends])
    with StoreWriter(path, (28, 28), with_strokes=strokes) as w:
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            w.append("train", images[a:b], labels[a:b], drawings[a:b] if strokes else None)
        rest = slice(bounds[-1], n)
        w.append("test", images[rest], labels[rest], drawings[rest] if strokes else None)
        w.finish(manifest)
    return images, labels, drawings


def test_round_trip_and_random_access(tmp_path):
    images, labels, drawings = _write(tmp_path / "ds", strokes=True)
    with PreparedDataset.open(tmp_path / "ds") as ds:
        assert ds.splits == ["train", "test"] and ds.size("train") == 4000
        assert ds.size("valid") == 0 and ds.has_strokes and ds.image_shape == (28, 28)
        x, y = ds.load("train")
        np.testing.assert_array_equal(x, images[:4000])
        np.testing.assert_array_equal(y, labels[:4000])
        assert y.dtype == np.int64 and x.dtype == np.uint8
        lazy = ds.images("train")
        assert lazy.shape == (4000, 28, 28) and len(lazy) == 4000
        idx = np.array([3999, 5, 1337, 5, 0, 2674])  # unsorted, repeated, across chunks
        np.testing.assert_array_equal(lazy[idx], images[idx])
        np.testing.assert_array_equal(ds.images("test")[10:20], images[4010:4020])
        np.testing.assert_array_equal(ds.images("test")[-1], images[-1])
        np.testing.assert_array_equal(ds.images("train")[::-500], images[:4000][::-500])
        assert ds.images("train")[np.array([], dtype=np.int64)].shape == (0, 28, 28)
        for split, offset, i in [("train", 0, 0), ("train", 0, 3001), ("test", 4000, 7)]:
            got = ds.strokes(split, i)
            want = drawings[offset + i]
            assert len(got) == len(want)
            for a, b in zip(got, want, strict=True):
                np.testing.assert_array_equal(a, b)
        with pytest.raises(IndexError):
            ds.images("test")[[1000]]
        with pytest.raises(DatasetError, match="no 'valid' split"):
            ds.labels("valid")


def test_file_is_plain_hdf5_with_the_blosc_filter(tmp_path):
    """Chunks written outside HDF5's filter pipeline still read through it."""
    images, labels, _ = _write(tmp_path / "ds")
    with h5py.File(tmp_path / "ds" / "data.h5", "r") as f:
        dset = f["train"]["images"]
        assert "32001" in dset._filters and dset.chunks == (ROWS, 28, 28)
        np.testing.assert_array_equal(dset[:], images[:4000])
        np.testing.assert_array_equal(f["test"]["labels"][:], labels[4000:])
        assert os.path.getsize(tmp_path / "ds" / "data.h5") < images.nbytes * 1.1


def test_simplified_strokes_keep_two_columns(tmp_path):
    _, _, drawings = _write(tmp_path / "ds", n=50, strokes=True, dims=2, appends=(40,))
    with PreparedDataset.open(tmp_path / "ds") as ds:
        got = ds.strokes("train", 39)
        assert all(s.shape[1] == 2 for s in got)
        for a, b in zip(got, drawings[39], strict=True):
            np.testing.assert_array_equal(a, b)
        everything = ds.all_strokes("test")
        assert len(everything) == 10
        for a, b in zip(everything[3], drawings[43], strict=True):
            np.testing.assert_array_equal(a, b)


def test_batches_cover_every_example_once_and_repeat_with_the_seed(tmp_path):
    _write(tmp_path / "ds", n=12000, appends=(3000, 7000))  # 8 chunks, the last one short
    with PreparedDataset.open(tmp_path / "ds") as ds:
        x, y = ds.load("train")
        batches = list(ds.iter_batches("train", BatchPlan(256, shuffle=True, seed=3, window=3)))
        seen = np.concatenate([b[2] for b in batches])
        assert sorted(seen.tolist()) == list(range(10000))
        assert not np.array_equal(seen, np.arange(10000))
        assert [len(b[2]) for b in batches] == [256] * 39 + [16]
        for images, labels, idx in batches:
            np.testing.assert_array_equal(images, x[idx])
            np.testing.assert_array_equal(labels, y[idx])
        again = [
            b[2] for b in ds.iter_batches("train", BatchPlan(256, shuffle=True, seed=3, window=3))
        ]
        np.testing.assert_array_equal(seen, np.concatenate(again))
        plan = list(ds.batch_indices("train", BatchPlan(256, shuffle=True, seed=3, window=3)))
        np.testing.assert_array_equal(np.concatenate(plan), seen)
        other = np.concatenate(
            [b[2] for b in ds.iter_batches("train", BatchPlan(256, seed=4, window=3))]
        )
        assert not np.array_equal(seen, other)
        dropped = list(ds.iter_batches("train", BatchPlan(256, drop_last=True)))
        assert all(len(b[2]) == 256 for b in dropped) and len(dropped) == 10000 // 256
        ordered = np.concatenate(
            [b[2] for b in ds.iter_batches("train", BatchPlan(999, shuffle=False))]
        )
        np.testing.assert_array_equal(ordered, np.arange(10000))


def test_interleaved_iterators_do_not_disturb_each_other(tmp_path):
    """An evaluation pass inside a training epoch must not change the epoch's order."""
    _write(tmp_path / "ds", n=12000, appends=(3000, 7000))
    with PreparedDataset.open(tmp_path / "ds") as ds:
        alone = [b[2] for b in ds.iter_batches("train", BatchPlan(500, seed=1, window=2))]
        mixed = []
        for batch in ds.iter_batches("train", BatchPlan(500, seed=1, window=2)):
            mixed.append(batch[2])
            next(ds.iter_batches("test", BatchPlan(64, seed=9)))  # started and abandoned
        np.testing.assert_array_equal(np.concatenate(alone), np.concatenate(mixed))


def test_a_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(KeyboardInterrupt), StoreWriter(out, (28, 28)) as w:
        w.append("train", np.zeros((3000, 28, 28), np.uint8), np.zeros(3000))
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DatasetError, match="not a prepared dataset"):
        PreparedDataset.open(out)


def test_leftovers_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    (tmp_path / f".ds.partial-{dead}").mkdir()
    (tmp_path / f".ds.partial-{dead}" / "data.h5").write_bytes(b"half")
    live = tmp_path / f".ds.partial-{os.getppid()}"  # our parent: certainly running
    live.mkdir()
    _write(tmp_path / "ds", n=100, appends=(50,))
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "ds"]


def test_existing_output_needs_overwrite_and_is_replaced_whole(tmp_path):
    _write(tmp_path / "ds")
    first = manifest_hash(tmp_path / "ds")
    with pytest.raises(DatasetError, match="--overwrite"):
        StoreWriter(tmp_path / "ds", (28, 28))
    with StoreWriter(tmp_path / "ds", (28, 28), overwrite=True) as w:
        w.append("valid", np.full((5, 28, 28), 7, np.uint8), np.zeros(5))
        w.finish({"format_version": 1, "classes": ["a"], "image_shape": [28, 28]})
    assert manifest_hash(tmp_path / "ds") != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    with PreparedDataset.open(tmp_path / "ds") as ds:
        assert ds.splits == ["valid"] and ds.images("valid")[4].max() == 7


def test_open_rejects_a_store_from_another_version(tmp_path):
    _write(tmp_path / "ds", n=100, appends=(50,))
    manifest = json.loads((tmp_path / "ds" / MANIFEST).read_text())
    manifest["format_version"] = 99
    (tmp_path / "ds" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="version 99"):
        PreparedDataset.open(tmp_path / "ds")


def test_kept_examples_keep_their_order_and_shards_share_one_order(tmp_path):
    """``keep`` (a held-out mask) and data-parallel shards, as the trainer reads them."""
    _write(tmp_path / "ds", n=12000, appends=(3000, 7000))
    with PreparedDataset.open(tmp_path / "ds") as ds:
        x, y = ds.load("train")
        keep = np.random.default_rng(5).random(10000) < 0.7
        full = np.concatenate(list(ds.batch_indices("train", BatchPlan(256, seed=2, window=2))))
        kept = [b for b in ds.iter_batches("train", BatchPlan(256, seed=2, window=2, keep=keep))]
        seen = np.concatenate([b[2] for b in kept])
        np.testing.assert_array_equal(seen, full[keep[full]])  # the same order, less the rest
        assert [len(b[2]) for b in kept[:-1]] == [256] * (len(kept) - 1)
        for images, labels, idx in kept:
            np.testing.assert_array_equal(images, x[idx])
            np.testing.assert_array_equal(labels, y[idx])
        shards = [
            [
                b[2]
                for b in ds.iter_batches(
                    "train", BatchPlan(256, seed=2, window=2, keep=keep, rank=r, world=3)
                )
            ]
            for r in range(3)
        ]
        for r in range(3):
            expected = [b[2] for b in kept[r::3]]
            plan = BatchPlan(256, seed=2, window=2, keep=keep, rank=r, world=3)
            indices = list(ds.batch_indices("train", plan))
            assert len(shards[r]) == len(expected) == len(indices)
            for got, want, planned in zip(shards[r], expected, indices, strict=True):
                np.testing.assert_array_equal(got, want)
                np.testing.assert_array_equal(planned, want)
        with pytest.raises(ValueError, match="rank"):
            next(ds.iter_batches("train", BatchPlan(256, rank=3, world=3)))
        with pytest.raises(ValueError, match="keep"):
            next(ds.iter_batches("train", BatchPlan(256, keep=keep[:10])))


def test_a_plan_cuts_the_stored_order_into_batches_without_files():
    """``BatchPlan`` is pure: 10 examples, 4 to a chunk, one chunk per window."""
    plan = BatchPlan(3, shuffle=False, window=1)
    assert [b.tolist() for b in plan.indices(10, 4, 1)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    steps = list(plan.steps(10, 4, 1))  # batches end in windows 0, 1, 2 and after the last
    assert [len(s.batches) for s in steps] == [1, 1, 1, 1] and steps[-1].window is None
    assert [s.first_open for s in steps] == [0, 1, 2, 2]  # the next batch starts there
    dropped = BatchPlan(3, shuffle=False, drop_last=True, rank=1, world=2)
    assert [b.tolist() for b in dropped.indices(10, 4, 1)] == [[3, 4, 5]]
    assert BatchPlan(3).chunks_per_window(1 << 20) == 16 and plan.chunks_per_window(1) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"batch_size": 8, "window": 0}, "window must be at least 1"),
        ({"batch_size": 8, "rank": 2, "world": 2}, r"rank must be in \[0, 2\)"),
        ({"batch_size": 8, "rank": -1}, r"rank must be in \[0, 1\)"),
    ],
)
def test_a_plan_refuses_impossible_settings(options, message):
    with pytest.raises(ValueError, match=message):
        BatchPlan(**options)


def test_batches_larger_than_a_window_span_several_windows(tmp_path):
    _write(tmp_path / "ds", n=12000, appends=(3000, 7000))
    with PreparedDataset.open(tmp_path / "ds") as ds:
        x, _ = ds.load("train")
        for size, window, keep in ((4000, 1, None), (3000, 1, np.arange(10000) % 3 == 0)):
            batches = list(
                ds.iter_batches("train", BatchPlan(size, seed=7, window=window, keep=keep))
            )
            plan = list(
                ds.batch_indices("train", BatchPlan(size, seed=7, window=window, keep=keep))
            )
            assert len(batches) == len(plan)
            for (images, _, idx), want in zip(batches, plan, strict=True):
                np.testing.assert_array_equal(idx, want)
                np.testing.assert_array_equal(images, x[idx])
            total = 10000 if keep is None else int(keep.sum())
            assert sum(len(b[2]) for b in batches) == total


def test_a_corrupt_chunk_is_an_error_naming_it_not_a_hang(tmp_path):
    _write(tmp_path / "ds", n=12000, appends=(3000, 7000))
    with h5py.File(tmp_path / "ds" / "data.h5", "r+") as f:
        f["train/images"].id.write_direct_chunk((ROWS * 2, 0, 0), b"\x02\x01garbage" * 10)
    with PreparedDataset.open(tmp_path / "ds") as ds:
        with pytest.raises(DatasetError, match="chunk 2 of train/images"):
            list(ds.iter_batches("train", BatchPlan(256, seed=1)))
        with pytest.raises(DatasetError, match="chunk 2 of train/images"):
            ds.images("train")[ROWS * 2 + 5]


def test_abandoning_an_epoch_stops_its_reading_threads(tmp_path):
    import threading

    _write(tmp_path / "ds", n=12000, appends=(3000, 7000))
    with PreparedDataset.open(tmp_path / "ds") as ds:
        before = threading.active_count()
        batches = ds.iter_batches("train", BatchPlan(64, seed=1, window=1))
        next(batches)
        assert threading.active_count() > before
        batches.close()
        assert threading.active_count() == before


def test_shards_with_windows_holding_none_of_their_batches_read_right(tmp_path):
    """Small windows and five processes: some windows hold no batch of a process."""
    _write(tmp_path / "ds", n=12000, appends=(3000, 7000))
    with PreparedDataset.open(tmp_path / "ds") as ds:
        x, _ = ds.load("train")
        for rank in range(5):
            batches = ds.iter_batches(
                "train", BatchPlan(700, seed=rank, window=1, rank=rank, world=5)
            )
            for images, _, idx in batches:
                np.testing.assert_array_equal(images, x[idx])


def test_a_buffer_is_not_reused_while_its_chunks_are_being_written():
    """A window with no batch of this process has no gathering to wait for, but its
    chunks may still be decompressing into its buffer: it is not freed before that."""
    from concurrent.futures import Future

    from imgclass.data.store.pipeline import _Live, _recycle
    from imgclass.data.store.plan import Window

    decoding: Future = Future()
    empty = np.zeros(0, np.int64)
    live = {
        0: _Live(np.zeros((1, 28, 28), np.uint8), Window(np.arange(1), empty, empty), [decoding])
    }
    free: list = []
    _recycle(live, free, first_open=1)
    assert not free and 0 in live
    decoding.set_result(None)
    _recycle(live, free, first_open=1)
    assert len(free) == 1 and not live
