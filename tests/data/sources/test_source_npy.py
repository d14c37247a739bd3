"""Quick, Draw! numpy bitmaps: Google's (n, 784) uint8 `.npy` files."""

from __future__ import annotations

import numpy as np
import pytest

from imgclass.data.sources import detect_format, open_source, quickdraw
from imgclass.errors import DataFormatError


def test_committed_fixture_holds_the_real_cat_bitmaps(sources_dir, quickdraw, read_all):
    x, y, classes = quickdraw
    path = sources_dir / "full_numpy_bitmap_cat.npy"
    assert detect_format(path) == "quickdraw-npy"
    source = open_source(path)
    assert source.classes() == ["cat"]
    chunks, labels = read_all(source)
    assert labels == ["cat"] * 5
    assert [len(c) for c in chunks] == [3, 2]
    assert chunks[1].ids == ["cat:3", "cat:4"]
    images = np.concatenate([c.images for c in chunks])
    np.testing.assert_array_equal(images, x[y == classes.index("cat")][:5])
    assert images.dtype == np.uint8 and images.shape == (5, 28, 28)


def test_label_comes_from_the_name_or_the_label_option(tmp_path, read_all):
    rows = np.arange(2 * 784, dtype=np.uint8).reshape(2, 784)
    np.save(tmp_path / "smiley face.npy", rows)
    _, labels = read_all(open_source(tmp_path / "smiley face.npy"))
    assert labels == ["smiley face"] * 2
    _, labels = read_all(open_source(tmp_path / "smiley face.npy", label="face"))
    assert labels == ["face"] * 2


def test_per_class_and_categories(sources_dir, read_all):
    path = sources_dir / "full_numpy_bitmap_cat.npy"
    chunks, labels = read_all(open_source(path, per_class=4))
    assert labels == ["cat"] * 4 and chunks[-1].ids == ["cat:3"]
    assert read_all(open_source(path, categories=["dog"]))[1] == []
    assert read_all(open_source(path, categories=["dog", "cat"]))[1] == ["cat"] * 5


def test_per_class_reads_only_the_first_rows_of_a_big_file(tmp_path, monkeypatch):
    # A 200,000-drawing file (150 MB, sparse on disk) whose first rows are set.
    path = tmp_path / "full_numpy_bitmap_big.npy"
    n = 200_000
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|u1", "fortran_order": False, "shape": (n, 784)}
        )
        offset = f.tell()
        f.write(np.full((3, 784), 7, np.uint8).tobytes())
        f.truncate(offset + n * 784)
    requested = []
    real_read_array = quickdraw.read_array

    def spy(f, shape, *args):
        requested.append(shape)
        return real_read_array(f, shape, *args)

    monkeypatch.setattr(quickdraw, "read_array", spy)
    chunks = list(open_source(path, per_class=3).iter_chunks(chunk_size=4096))
    assert requested == [(3, 28, 28)]
    assert len(chunks) == 1 and chunks[0].images.shape == (3, 28, 28)
    assert (chunks[0].images == 7).all() and chunks[0].images.flags.writeable


def test_version_2_headers_are_read(tmp_path, read_all):
    rows = np.random.default_rng(0).integers(0, 256, (4, 784), dtype=np.uint8)
    path = tmp_path / "cat.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array(f, rows, version=(2, 0))
    chunks, _ = read_all(open_source(path))
    np.testing.assert_array_equal(np.concatenate([c.images for c in chunks]).reshape(4, 784), rows)


def test_truncated_npy_is_refused_on_open_before_anything_is_read(tmp_path, sources_dir):
    path = tmp_path / "full_numpy_bitmap_cat.npy"
    data = (sources_dir / "full_numpy_bitmap_cat.npy").read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(
        DataFormatError, match=r"full_numpy_bitmap_cat\.npy: truncated.* 5 drawings"
    ):
        open_source(path)


def test_file_shrinking_after_open_is_named_with_its_row(tmp_path, sources_dir):
    path = tmp_path / "cat.npy"
    data = (sources_dir / "full_numpy_bitmap_cat.npy").read_bytes()
    path.write_bytes(data)
    source = open_source(path)
    path.write_bytes(data[: -784 * 2])
    chunks = source.iter_chunks(chunk_size=3)
    assert len(next(chunks)) == 3
    with pytest.raises(DataFormatError, match=r"cat\.npy, row 3: truncated bitmap data"):
        next(chunks)


@pytest.mark.parametrize(
    "array",
    [np.zeros((3, 28, 28), np.uint8), np.zeros((3, 784), np.float32), np.zeros(784, np.uint8)],
)
def test_npy_of_another_shape_or_type_is_refused(tmp_path, array):
    np.save(tmp_path / "cat.npy", array)
    with pytest.raises(
        DataFormatError, match=r"cat\.npy: expected a uint8 array of shape \(n, 784\)"
    ):
        open_source(tmp_path / "cat.npy")


def test_not_an_npy_file(tmp_path):
    (tmp_path / "cat.npy").write_bytes(b"PK\x03\x04 this is a zip, not an npy")
    with pytest.raises(DataFormatError, match=r"cat\.npy: not a valid \.npy array"):
        open_source(tmp_path / "cat.npy")


def test_a_chunk_is_not_kept_alive_by_the_waiting_reader(tmp_path):
    """Regression: the reader named each chunk's images in a local, so a suspended reader
    kept its last chunk in memory; prepare reads hundreds of files side by side, and
    those chunks added up (33 MB of 25 files' first chunks at 100k bitmaps)."""
    import gc
    import weakref

    np.save(tmp_path / "cat.npy", np.arange(6 * 784, dtype=np.uint8).reshape(6, 784))
    chunks = open_source(tmp_path / "cat.npy").iter_chunks(chunk_size=2)
    images = weakref.ref(next(chunks).images)
    gc.collect()
    assert images() is None  # let go by the reader while it waits for the next call
    assert len(next(chunks)) == 2
