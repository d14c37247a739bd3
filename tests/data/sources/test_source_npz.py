"""`.npz` bitmaps: x/y/classes (the shared Quick, Draw! file) and MNIST-style keys."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from imgclass.data.sources import detect_format, open_source
from imgclass.errors import DataFormatError


def test_shared_quickdraw_file_with_categories_and_per_class(shared_data, quickdraw, read_all):
    x, y, classes = quickdraw
    path = shared_data / "quickdraw_345x80.npz"
    assert detect_format(path) == "npz"
    source = open_source(path, categories=["sun", "cat"], per_class=3)
    assert source.classes() == classes
    chunks, labels = read_all(source, 256)
    # Reference: the first 3 rows of each class, in file order, selected with plain numpy.
    rows = np.sort(
        np.concatenate([np.flatnonzero(y == classes.index(c))[:3] for c in ("sun", "cat")])
    )
    assert labels == [classes[y[i]] for i in rows]
    assert [i for c in chunks for i in c.ids] == [f"x:{i}" for i in rows]
    np.testing.assert_array_equal(np.concatenate([c.images for c in chunks]), x[rows])
    assert all(c.split is None for c in chunks)


def test_mnist_style_keys_give_their_splits(tmp_path, mnist, read_all):
    path = tmp_path / "digits.npz"
    np.savez(
        path,
        x_train=mnist["x_train"][:8],
        y_train=mnist["y_train"][:8],
        x_valid=mnist["x_train"][8:11],
        y_valid=mnist["y_train"][8:11],
        x_test=mnist["x_test"][:4],
        y_test=mnist["y_test"][:4],
    )
    source = open_source(path)
    assert source.classes() is None
    chunks, labels = read_all(source)
    assert [(c.split, len(c)) for c in chunks] == [  # own test and valid parts first
        ("test", 3),
        ("test", 1),
        ("valid", 3),
        ("train", 3),
        ("train", 3),
        ("train", 2),
    ]
    assert labels[:4] == [str(v) for v in mnist["y_test"][:4]]
    test_images = np.concatenate([c.images for c in chunks if c.split == "test"])
    np.testing.assert_array_equal(test_images, mnist["x_test"][:4])


def test_string_labels_and_rgb_images(tmp_path, read_all):
    x = np.arange(4 * 5 * 6 * 3, dtype=np.uint8).reshape(4, 5, 6, 3)
    np.savez(tmp_path / "photos.npz", x=x, y=np.array(["dog", "cat", "dog", "cat"]))
    chunks, labels = read_all(open_source(tmp_path / "photos.npz", per_class=1))
    assert labels == ["dog", "cat"]
    np.testing.assert_array_equal(chunks[0].images, x[:2])


def test_images_stream_a_chunk_at_a_time(tmp_path):
    n = 20_000  # 15.7 MB of bitmaps, stored uncompressed
    path = tmp_path / "big.npz"
    np.savez(path, x=np.full((n, 28, 28), 9, np.uint8), y=np.arange(n) % 10)
    source = open_source(path)
    tracemalloc.start()
    try:
        total = 0
        for chunk in source.iter_chunks(chunk_size=500):
            total += len(chunk)
            assert chunk.images.shape == (500, 28, 28) and (chunk.images == 9).all()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == n
    assert peak < 3_000_000, f"peak {peak} bytes: the whole array was loaded"


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"x": np.zeros((3, 4, 4), np.uint8), "y": np.zeros(2, np.int64)},
            "2 labels for 3 images in x",
        ),
        ({"x": np.zeros((3, 4, 4), np.float32), "y": np.zeros(3, np.int64)}, "x must be uint8"),
        ({"x": np.zeros((3, 4, 4, 2), np.uint8), "y": np.zeros(3, np.int64)}, "x must be uint8"),
        (
            {
                "x": np.zeros((2, 4, 4), np.uint8),
                "y": np.array([0, 2]),
                "classes": np.array(["a", "b"]),
            },
            "label 2 is out of range for 2 classes",
        ),
        (
            {"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0.5, 1.0])},
            "labels must be integers or strings",
        ),
        (
            {"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([None, 1], dtype=object)},
            "array 'y' holds Python objects",
        ),
        ({"images": np.zeros((2, 4, 4), np.uint8)}, r"expected arrays x and y .*'images'"),
    ],
)
def test_bad_npz_contents_are_named(tmp_path, arrays, message):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataFormatError, match=rf"data\.npz: {message}"):
        list(open_source(path).iter_chunks())


def test_not_a_zip_and_cut_short(tmp_path, mnist):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(DataFormatError, match=r"junk\.npz: not a valid \.npz"):
        open_source(tmp_path / "junk.npz")
    path = tmp_path / "cut.npz"
    np.savez_compressed(path, x=mnist["x_train"], y=mnist["y_train"])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=r"cut\.npz"):
        list(open_source(path, format="npz").iter_chunks())
