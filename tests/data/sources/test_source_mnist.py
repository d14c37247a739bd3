"""MNIST IDX files (written here with struct and gzip from the real digits) and CSV."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from imgclass.data.sources import detect_format, open_source
from imgclass.errors import ConfigError, DataFormatError


def write_idx(path, array, magic, gz=None):
    """An IDX file: big-endian magic, dimensions, then the bytes."""
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(np.uint8).tobytes()
    gz = path.name.endswith(".gz") if gz is None else gz
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.fixture
def idx_dir(tmp_path, mnist):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", mnist["x_train"][:30], 0x803)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", mnist["y_train"][:30], 0x801)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", mnist["x_test"][:10], 0x803)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", mnist["y_test"][:10], 0x801)
    return tmp_path


def by_split(chunks):
    out = {}
    for c in chunks:
        images, labels, ids = out.setdefault(c.split, ([], [], []))
        images.append(c.images)
        labels.extend(c.labels)
        ids.extend(c.ids)
    return {s: (np.concatenate(i), lab, ids) for s, (i, lab, ids) in out.items()}


def test_idx_folder_gives_both_splits_with_the_real_digits(idx_dir, mnist):
    assert detect_format(idx_dir) == "mnist-idx"
    source = open_source(idx_dir)
    assert source.classes() is None  # numbers, not always MNIST's ten digits
    chunks = list(source.iter_chunks(chunk_size=7))
    assert chunks[0].split == "test"  # the official test pairs come first
    got = by_split(chunks)
    np.testing.assert_array_equal(got["train"][0], mnist["x_train"][:30])
    assert got["train"][1] == [str(v) for v in mnist["y_train"][:30]]
    np.testing.assert_array_equal(got["test"][0], mnist["x_test"][:10])
    assert got["test"][2] == [f"test:{i}" for i in range(10)]


def test_open_on_the_images_or_the_labels_file(idx_dir, mnist):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert detect_format(idx_dir / name) == "mnist-idx"
        got = by_split(open_source(idx_dir / name).iter_chunks())
        assert list(got) == ["test"]
        np.testing.assert_array_equal(got["test"][0], mnist["x_test"][:10])


def test_dotted_names_and_mixed_gzip(tmp_path, mnist):
    write_idx(tmp_path / "train-images.idx3-ubyte", mnist["x_train"][:5], 0x803)
    write_idx(tmp_path / "train-labels.idx1-ubyte.gz", mnist["y_train"][:5], 0x801)
    got = by_split(open_source(tmp_path).iter_chunks())
    assert got["train"][1] == [str(v) for v in mnist["y_train"][:5]]


def test_per_class_and_categories_stop_early(idx_dir, mnist):
    # The labels after the wanted ones are garbage: reading must stop before them.
    y = mnist["y_train"][:30].copy()
    first_ones = np.flatnonzero(y == 1)[:2]
    y[first_ones[-1] + 1 :] = 200
    write_idx(idx_dir / "train-labels-idx1-ubyte.gz", y, 0x801)
    chunks = list(
        open_source(
            idx_dir / "train-images-idx3-ubyte.gz", categories=["1"], per_class=2
        ).iter_chunks(chunk_size=1)
    )
    got = by_split(chunks)
    assert got["train"][1] == ["1", "1"]
    assert got["train"][2] == [f"train:{i}" for i in first_ones]
    np.testing.assert_array_equal(got["train"][0], mnist["x_train"][first_ones])


def test_a_source_can_be_read_twice(idx_dir, mnist):
    source = open_source(idx_dir, per_class=1)
    expected = len(set(mnist["y_train"][:30])) + len(set(mnist["y_test"][:10]))
    assert len([lab for c in source.iter_chunks() for lab in c.labels]) == expected
    assert len([lab for c in source.iter_chunks() for lab in c.labels]) == expected


def test_wrong_magic_names_the_file(idx_dir, mnist):
    write_idx(idx_dir / "t10k-images-idx3-ubyte", mnist["x_test"][:10, 0], 0x801)
    with pytest.raises(
        DataFormatError, match=r"t10k-images-idx3-ubyte: wrong magic number 0x00000801"
    ):
        list(open_source(idx_dir).iter_chunks())


def test_label_count_mismatch_is_refused_before_any_image(idx_dir, mnist):
    write_idx(idx_dir / "t10k-labels-idx1-ubyte", mnist["y_test"][:9], 0x801)
    chunks = open_source(idx_dir / "t10k-images-idx3-ubyte").iter_chunks()
    with pytest.raises(DataFormatError, match=r"t10k-labels-idx1-ubyte: 9 labels for 10 images"):
        next(chunks)


def test_truncated_plain_file_is_refused_before_any_image(idx_dir):
    path = idx_dir / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(
        DataFormatError, match=r"t10k-images-idx3-ubyte: truncated: dimensions \(10, 28, 28\)"
    ):
        next(open_source(path).iter_chunks())


def test_truncated_or_corrupt_gzip_names_the_right_file(idx_dir):
    images = idx_dir / "train-images-idx3-ubyte.gz"
    data = images.read_bytes()
    images.write_bytes(gzip.compress(gzip.decompress(data)[:-100]))
    with pytest.raises(
        DataFormatError, match=r"train-images-idx3-ubyte\.gz, image \d+: truncated image data"
    ):
        list(open_source(images).iter_chunks(chunk_size=8))
    images.write_bytes(data[:-30])
    with pytest.raises(
        DataFormatError, match=r"train-images-idx3-ubyte\.gz, image \d+: corrupt gzip"
    ):
        list(open_source(images).iter_chunks(chunk_size=8))
    images.write_bytes(data)
    labels = idx_dir / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(b"\x1f\x8b" + b"\x00" * 30)
    with pytest.raises(DataFormatError, match=r"train-labels-idx1-ubyte\.gz: corrupt gzip"):
        list(open_source(images).iter_chunks())


def test_extra_data_and_bad_labels(idx_dir, mnist):
    path = idx_dir / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataFormatError, match=r"t10k-labels-idx1-ubyte: too long"):
        list(open_source(path).iter_chunks())
    # Labels past 9 are classes too (EMNIST's letters are 1..26): read, not refused.
    y = mnist["y_test"][:10].copy()
    y[4] = 12
    write_idx(path, y, 0x801)
    labels = [label for chunk in open_source(path).iter_chunks() for label in chunk.labels]
    assert labels == [str(v) for v in y] and labels[4] == "12"


def test_missing_partner_file(idx_dir):
    (idx_dir / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(
        DataFormatError, match=r"no matching labels file t10k-labels-idx1-ubyte\[\.gz\]"
    ):
        open_source(idx_dir)


# --- CSV ------------------------------------------------------------------------------


def csv_rows(x, y):
    return [",".join(map(str, [label, *image.ravel()])) for image, label in zip(x, y, strict=True)]


def test_csv_with_header(tmp_path, mnist, read_all):
    header = ",".join(["label"] + [f"pixel{i}" for i in range(784)])
    path = tmp_path / "mnist_test.csv"
    path.write_text("\n".join([header, *csv_rows(mnist["x_test"][:5], mnist["y_test"][:5])]) + "\n")
    assert detect_format(path) == "mnist-csv"
    chunks, labels = read_all(open_source(path))
    assert labels == [str(v) for v in mnist["y_test"][:5]]
    assert {c.split for c in chunks} == {"test"}
    assert chunks[0].ids == ["line 2", "line 3", "line 4"]
    np.testing.assert_array_equal(np.concatenate([c.images for c in chunks]), mnist["x_test"][:5])


def test_csv_without_header_gzipped_with_filters(tmp_path, mnist, read_all):
    path = tmp_path / "mnist_train.csv.gz"
    y = mnist["y_train"][:40]
    path.write_bytes(gzip.compress("\n".join(csv_rows(mnist["x_train"][:40], y)).encode()))
    chunks, labels = read_all(open_source(path, categories=["3", "7"], per_class=2))
    threes, sevens = np.flatnonzero(y == 3)[:2], np.flatnonzero(y == 7)[:2]
    assert labels == [str(y[i]) for i in sorted([*threes, *sevens])]
    assert chunks[0].split is None
    assert open_source(tmp_path / "mnist_train.csv.gz", split="test").split == "test"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("7,1,2,3", "expected a label and 784 pixels, found 4 columns"),
        ("7," + ",".join(["1.5"] * 784), "every column must be an integer"),
        ("7," + ",".join(["300"] * 784), r"pixel values must be in 0\.\.255"),
        ("x," + ",".join(["0"] * 784), "every column must be an integer"),
    ],
)
def test_bad_csv_rows_are_named_by_line(tmp_path, mnist, row, message):
    path = tmp_path / "digits.csv"
    path.write_text("\n".join([*csv_rows(mnist["x_test"][:2], mnist["y_test"][:2]), row]) + "\n")
    with pytest.raises(DataFormatError, match=rf"digits\.csv, line 3: {message}"):
        list(open_source(path).iter_chunks())


def test_options_a_format_does_not_take_are_config_errors(idx_dir):
    with pytest.raises(ConfigError, match="format mnist-idx: .*label"):
        open_source(idx_dir, label="seven")
