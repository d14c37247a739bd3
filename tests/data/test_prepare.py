"""The prepare pipeline: sources -> render -> recipe -> split -> store, called in-process.

Inputs are real Quick, Draw! data from ../shared/data, written in the users' file
formats by the tests themselves, and a few hand-written simplified drawings.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import imgclass.data.prepare as prepare_module
from imgclass.data.prepare import PrepareOptions, prepare
from imgclass.data.render import render_strokes, simplify_raw
from imgclass.data.split import SplitAssigner, parse_split
from imgclass.data.store import PreparedDataset, chunk_rows
from imgclass.errors import ConfigError, DataFormatError


def test_split_parsing():
    assert parse_split("70/10/20") == (70, 10, 20)
    assert parse_split("0/0/100") == (0, 0, 100)
    assert parse_split("100/0/0") == (100, 0, 0)
    for bad in ("80/10", "80/10/11", "a/b/c", "-10/60/50", "80/10/10/0", ""):
        with pytest.raises(ConfigError, match="--split"):
            parse_split(bad)


@pytest.mark.parametrize("percentages", [(80, 10, 10), (70, 10, 20), (0, 0, 100), (34, 33, 33)])
def test_split_is_stratified_deterministic_and_streaming(percentages):
    labels = ["a"] * 1000 + ["b"] * 300 + ["c"] * 100
    first = SplitAssigner(percentages, seed=1).assign(labels)
    np.testing.assert_array_equal(first, SplitAssigner(percentages, seed=1).assign(labels))
    for start, n in ((0, 1000), (1000, 300), (1300, 100)):
        expected = [n * p // 100 for p in percentages]
        assert np.bincount(first[start : start + n], minlength=3).tolist() == expected
    # Fed in small pieces, in another interleaving of the classes: the same assignment.
    streamed = SplitAssigner(percentages, seed=1)
    order = np.random.default_rng(0).permutation(len(labels))
    got = np.empty(len(labels), dtype=np.int8)
    for part in np.array_split(np.sort(order[:700]), 9) + np.array_split(np.sort(order[700:]), 5):
        got[part] = streamed.assign([labels[i] for i in part])
    if percentages != (0, 0, 100):
        other = SplitAssigner(percentages, seed=2).assign(labels)
        assert not np.array_equal(first, other)
    for name in "abc":  # within each class the k-th example always goes the same way
        where = np.flatnonzero(np.array(labels) == name)
        np.testing.assert_array_equal(np.sort(got[where]), np.sort(first[where]))


def _npy_files(tmp_path: Path, shared_data: Path, names: list[str], n: int = 40) -> list[Path]:
    """Google-format `full_numpy_bitmap_<name>.npy` files of real bitmaps (n, 784).

    Past the 80 real ones, the bitmaps repeat with their copy number in the corner
    pixels, so that every bitmap differs (prepare drops exact copies)."""
    q = np.load(shared_data / "quickdraw_345x80.npz")
    classes = [str(c) for c in q["classes"]]
    folder = tmp_path / "npy"
    folder.mkdir(exist_ok=True)
    files = []
    for name in names:
        bitmaps = q["x"][q["y"] == classes.index(name)]
        x = np.resize(bitmaps, (n, 28, 28))
        copy = np.arange(n) // len(bitmaps)
        x[copy > 0, -1, -1] = copy[copy > 0] % 256
        x[copy > 0, -1, -2] = copy[copy > 0] // 256 + 1
        files.append(folder / f"full_numpy_bitmap_{name}.npy")
        np.save(files[-1], x.reshape(-1, 784))
    return files


def _digest(images: np.ndarray) -> list[str]:
    return sorted(hashlib.sha1(img.tobytes()).hexdigest() for img in images)


def test_prepare_npy_files_into_a_stratified_shuffled_store(tmp_path, shared_data):
    files = _npy_files(tmp_path, shared_data, ["cat", "sun", "cup"])
    out = prepare(
        PrepareOptions(inputs=[str(files[0].parent)], out=str(tmp_path / "ds"), recipe="none")
    )
    with PreparedDataset.open(out) as ds:
        m = ds.manifest
        assert ds.classes == ["cat", "cup", "sun"] and m["num_classes"] == 3
        assert m["counts"] == {"train": 96, "valid": 12, "test": 12}
        assert all(m["counts_per_class"]["test"][c] == 4 for c in ds.classes)
        assert m["recipe"]["name"] == "none" and m["split_percentages"] == [80, 10, 10]
        assert m["image_shape"] == [28, 28] and m["has_strokes"] is False
        assert "CC BY 4.0" in m["licence"] and m["seed"] == 0
        by_name = {Path(s["path"]).name: s for s in m["sources"]}
        for f in files:
            assert by_name[f.name]["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
        x, y = ds.load("train")
        assert len(set(y[:20].tolist())) > 1  # classes are interleaved, not in blocks
        for c, name in enumerate(ds.classes):  # each image kept with its own label
            every = [ds.load(s)[0][ds.labels(s) == c] for s in ds.splits]
            source = np.load(files[0].parent / f"full_numpy_bitmap_{name}.npy")
            assert _digest(np.concatenate(every)) == _digest(source.reshape(-1, 28, 28))
    again = prepare(
        PrepareOptions(inputs=[str(files[0].parent)], out=str(tmp_path / "ds2"), recipe="none")
    )
    with PreparedDataset.open(out) as a, PreparedDataset.open(again) as b:
        for split in a.splits:
            np.testing.assert_array_equal(a.load(split)[0], b.load(split)[0])
            np.testing.assert_array_equal(a.labels(split), b.labels(split))


def test_small_buffers_and_many_files_still_mix_every_class(tmp_path, shared_data):
    """Twelve class files, a buffer of 4,000 bitmaps (each source is read 256 at a time):
    every stretch of the store holds every class, and nothing is lost or duplicated
    across the many flushes."""
    names = [
        "apple",
        "sun",
        "tree",
        "house",
        "car",
        "cat",
        "fish",
        "star",
        "moon",
        "eye",
        "cup",
        "shoe",
    ]
    files = _npy_files(tmp_path, shared_data, names, n=1000)
    options = PrepareOptions(
        inputs=[str(f) for f in files],
        out=str(tmp_path / "ds"),
        recipe="none",
        split=(100, 0, 0),
        buffer_bytes=4000 * 784,
    )
    with PreparedDataset.open(prepare(options)) as ds:
        x, y = ds.load("train")
        assert np.bincount(y).tolist() == [1000] * 12
        rows = chunk_rows((28, 28))
        for start in range(0, len(y), rows):
            assert len(np.unique(y[start : start + rows])) == 12
        for c, name in enumerate(ds.classes):
            source = np.load(tmp_path / "npy" / f"full_numpy_bitmap_{name}.npy")
            assert _digest(x[y == c]) == _digest(source.reshape(-1, 28, 28))


def _raw_lines(shared_data: Path, n: int) -> list[str]:
    with gzip.open(shared_data / "quickdraw_strokes_raw.ndjson.gz", "rt") as f:
        return [next(f) for _ in range(n)]


def test_raw_strokes_are_rendered_and_kept_with_their_timing(tmp_path, shared_data):
    lines = _raw_lines(shared_data, 60)
    src = tmp_path / "raw.ndjson"
    src.write_text("".join(lines))
    out = prepare(
        PrepareOptions(
            inputs=[str(src)], out=str(tmp_path / "ds"), recipe="none", split=(0, 0, 100)
        )
    )
    with PreparedDataset.open(out) as ds:
        assert ds.has_strokes and ds.manifest["stroke_kind"] == "raw"
        assert ds.splits == ["test"] and ds.size("test") == 60
        words = sorted(json.loads(line)["word"] for line in lines)
        assert sorted(ds.classes[i] for i in ds.labels("test")) == words
        by_first_point = {}
        for line in lines:
            first = json.loads(line)["drawing"]
            key = np.array([first[0][0][0], first[0][1][0], first[0][2][0]], np.float32).tobytes()
            by_first_point[key] = first
        for i in (0, 17, 59):
            drawing = ds.strokes("test", i)
            assert drawing[0].shape[1] == 3  # x, y, t
            original = by_first_point[drawing[0][0].tobytes()]
            for got, (xs, ys, ts) in zip(drawing, original, strict=True):
                np.testing.assert_allclose(got, np.column_stack([xs, ys, ts]), rtol=1e-6)
            np.testing.assert_array_equal(
                render_strokes(simplify_raw(drawing)), ds.images("test")[i]
            )


HAND_DRAWN = {  # simplified Quick, Draw! strokes (0..255), drawn by hand
    "square": [[[0, 255, 255, 0, 0], [0, 0, 255, 255, 0]]],
    "cross": [[[0, 255], [0, 255]], [[255, 0], [0, 255]]],
    "line": [[[0, 255], [128, 128]]],
}


def test_simplified_strokes_keep_two_columns(tmp_path):
    src = tmp_path / "shapes.ndjson"
    src.write_text(
        "".join(
            json.dumps({"word": word, "key_id": str(k), "drawing": drawing}) + "\n"
            for k in range(10)
            for word, drawing in HAND_DRAWN.items()
        )
    )
    out = prepare(PrepareOptions(inputs=[str(src)], out=str(tmp_path / "ds"), recipe="none"))
    with PreparedDataset.open(out) as ds:
        assert ds.manifest["stroke_kind"] == "simplified" and ds.classes == [
            "cross",
            "line",
            "square",
        ]
        for i in range(ds.size("train")):
            word = ds.classes[ds.labels("train")[i]]
            drawing = ds.strokes("train", i)
            expected = [np.array(s, dtype=np.float32).T for s in HAND_DRAWN[word]]
            assert len(drawing) == len(expected)
            for got, want in zip(drawing, expected, strict=True):
                np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(ds.images("train")[i], render_strokes(expected))


def test_sketchrnn_own_valid_and_test_splits_are_kept(tmp_path, shared_data):
    """stroke-3 sequences (dx, dy, pen_lifted) made from real raw strokes."""
    sequences = []
    for line in _raw_lines(shared_data, 30):
        strokes = [np.array(s[:2], dtype=np.float64).T for s in json.loads(line)["drawing"]]
        points = np.vstack(strokes)
        lifted = np.zeros(len(points))
        lifted[np.cumsum([len(s) for s in strokes]) - 1] = 1
        deltas = np.diff(points, axis=0, prepend=np.zeros((1, 2)))
        sequences.append(np.column_stack([deltas, lifted]).astype(np.int16))
    parts = {"train": sequences[:20], "valid": sequences[20:25], "test": sequences[25:]}
    arrays = {key: np.empty(len(seqs), dtype=object) for key, seqs in parts.items()}
    for key, seqs in parts.items():
        arrays[key][:] = seqs
    src = tmp_path / "sketchrnn_owl.npz"
    np.savez(src, train=arrays["train"], valid=arrays["valid"], test=arrays["test"])
    out = prepare(PrepareOptions(inputs=[str(src)], out=str(tmp_path / "ds"), recipe="none"))
    with PreparedDataset.open(out) as ds:
        assert ds.classes == ["owl"]
        assert ds.size("test") == 5 and ds.size("valid") + ds.size("train") == 25
        assert ds.size("valid") >= 5  # its own 5, plus about 11% of its training part
        test_first = [ds.strokes("test", i)[0][0, :2].tolist() for i in range(5)]
        own = [np.cumsum(s[:, :2], axis=0)[0].tolist() for s in parts["test"]]
        assert sorted(test_first) == sorted(own)


def test_an_interrupted_prepare_leaves_nothing_and_the_next_one_starts_clean(
    tmp_path, shared_data, monkeypatch
):
    files = _npy_files(tmp_path, shared_data, ["cat", "sun"], n=3000)
    out = tmp_path / "ds"
    real = prepare_module.round_robin

    def interrupted(sources, chunk_size):
        for k, chunk in enumerate(real(sources, chunk_size)):
            if k == 3:
                raise KeyboardInterrupt
            yield chunk

    monkeypatch.setattr(prepare_module, "round_robin", interrupted)
    options = PrepareOptions(
        inputs=[str(f) for f in files], out=str(out), recipe="none", buffer_bytes=1000 * 784
    )
    with pytest.raises(KeyboardInterrupt):
        prepare(options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["npy"]
    # A prepare killed outright leaves its partial folder; the next run removes it.
    (tmp_path / ".ds.partial-999999999").mkdir()
    monkeypatch.setattr(prepare_module, "round_robin", real)
    with PreparedDataset.open(prepare(options)) as ds:
        assert sum(ds.size(s) for s in ds.splits) == 6000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "npy"]


def test_a_bad_record_late_in_the_input_leaves_no_output(tmp_path, shared_data):
    lines = _raw_lines(shared_data, 40)
    src = tmp_path / "raw.ndjson"
    src.write_text("".join(lines) + '{"word": "cat"}\n')
    with pytest.raises(DataFormatError, match="line 41"):
        prepare(PrepareOptions(inputs=[str(src)], out=str(tmp_path / "ds"), recipe="none"))
    assert list(tmp_path.iterdir()) == [src]


def test_recipes_and_sizes_apply_to_every_image(tmp_path, shared_data):
    from imgclass.data.preprocess import apply_recipe

    files = _npy_files(tmp_path, shared_data, ["cat", "sun"], n=30)
    options = PrepareOptions(
        inputs=[str(f) for f in files], out=str(tmp_path / "ds"), recipe="sketch", size=32
    )
    with PreparedDataset.open(prepare(options)) as ds:
        assert ds.image_shape == (32, 32) and ds.recipe["name"] == "sketch"
        assert ds.recipe["size"] == [32, 32]
        for c, name in enumerate(ds.classes):
            stored = np.concatenate([ds.load(s)[0][ds.labels(s) == c] for s in ds.splits])
            source = np.load(tmp_path / "npy" / f"full_numpy_bitmap_{name}.npy")
            expected = apply_recipe(ds.recipe, source.reshape(-1, 28, 28))
            assert _digest(stored) == _digest(expected)


def test_round_robin_lets_go_of_the_chunks_it_held_back():
    """Regression: round_robin held back one chunk per source and kept all of them until
    every source was read, so prepare's memory grew by a chunk per input file."""
    import gc
    import weakref

    from imgclass.data.prepare import round_robin
    from imgclass.data.sources import Chunk

    class Two:  # a source of two chunks that keeps nothing while it waits
        def __init__(self, name: str) -> None:
            self.name = name

        def iter_chunks(self, chunk_size: int):
            for _ in range(2):
                yield Chunk([self.name] * 2, self.name, np.zeros((2, 28, 28), np.uint8))

    chunks = round_robin([Two("cat"), Two("dog"), Two("sun")], 2)
    first = weakref.ref(next(chunks).images)  # held back, then yielded
    assert next(chunks).labels == ["dog", "dog"]
    gc.collect()
    assert first() is None
    assert sum(len(c) for c in chunks) == 8
