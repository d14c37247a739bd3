"""Every input format, read from small files in the real format (written here with
numpy, struct, gzip and PIL from the real data in ../shared/data or by hand)."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclass.data.sources import detect_format, open_source
from imgclass.errors import DataFormatError


def read_all(source):
    chunks = list(source.iter_chunks(chunk_size=3))
    labels = [lab for c in chunks for lab in c.labels]
    return chunks, labels


@pytest.fixture(scope="module")
def quickdraw(shared_data: Path):
    d = np.load(shared_data / "quickdraw_345x80.npz")
    return d["x"], d["y"], [str(c) for c in d["classes"]]


# --- Quick, Draw! bitmaps -----------------------------------------------------------


def test_npy_bitmaps_stream_in_chunks_with_the_label_from_the_file_name(tmp_path, quickdraw):
    x, y, classes = quickdraw
    cat = x[y == classes.index("cat")][:7].reshape(7, 784)
    path = tmp_path / "full_numpy_bitmap_cat.npy"
    np.save(path, cat)
    assert detect_format(path) == "quickdraw-npy"
    chunks, labels = read_all(open_source(path))
    assert labels == ["cat"] * 7
    assert [len(c) for c in chunks] == [3, 3, 1]
    np.testing.assert_array_equal(
        np.concatenate([c.images for c in chunks]), cat.reshape(7, 28, 28)
    )


def test_npy_per_class_and_categories(tmp_path, quickdraw):
    x = quickdraw[0][:10].reshape(10, 784)
    np.save(tmp_path / "dog.npy", x)
    _, labels = read_all(open_source(tmp_path / "dog.npy", per_class=4))
    assert labels == ["dog"] * 4
    _, labels = read_all(open_source(tmp_path / "dog.npy", categories=["cat"]))
    assert labels == []


def test_truncated_npy_is_refused_before_anything_is_read(tmp_path, quickdraw):
    path = tmp_path / "cat.npy"
    np.save(path, quickdraw[0][:5].reshape(5, 784))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataFormatError, match=r"cat\.npy.*truncated"):
        open_source(path)


def test_npy_with_the_wrong_shape_is_refused(tmp_path):
    np.save(tmp_path / "cat.npy", np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DataFormatError, match=r"\(n, 784\)"):
        open_source(tmp_path / "cat.npy")


# --- Quick, Draw! ndjson -------------------------------------------------------------


def _record(word, drawing, key=1):
    return json.dumps(
        {
            "word": word,
            "countrycode": "US",
            "timestamp": "2017-03-01 00:00:00 UTC",
            "recognized": True,
            "key_id": str(key),
            "drawing": drawing,
        }
    )


@pytest.fixture(scope="module")
def raw_lines(shared_data):
    with gzip.open(shared_data / "quickdraw_strokes_raw.ndjson.gz", "rt") as f:
        return [next(f) for _ in range(40)]


def test_raw_ndjson_keeps_strokes_with_timing(tmp_path, raw_lines):
    path = tmp_path / "raw.ndjson.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(raw_lines)
    chunks, labels = read_all(open_source(path))
    first = json.loads(raw_lines[0])
    assert labels == [json.loads(line)["word"] for line in raw_lines]
    assert chunks[0].stroke_kind == "raw"
    stroke = chunks[0].strokes[0][0]
    assert stroke.shape == (len(first["drawing"][0][0]), 3)
    np.testing.assert_allclose(stroke[:, 2], first["drawing"][0][2])
    assert chunks[0].ids[0] == first["key_id"]


def test_simplified_ndjson(tmp_path):
    path = tmp_path / "full_simplified_cat.ndjson"
    drawing = [[[0, 100, 255], [0, 50, 80]], [[10, 10], [200, 255]]]
    path.write_text(_record("cat", drawing) + "\n" + _record("cat", drawing, 2) + "\n")
    chunks, labels = read_all(open_source(path))
    assert labels == ["cat", "cat"] and chunks[0].stroke_kind == "simplified"
    np.testing.assert_array_equal(chunks[0].strokes[0][0], [[0, 0], [100, 50], [255, 80]])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: not valid JSON"),
        (json.dumps({"word": "cat"}), "line 2: no 'drawing'"),
        (_record("cat", [[[1, 2, 3], [1, 2]]]), "line 2: stroke 0: x, y"),
        (_record("cat", [[[1, "a"], [1, 2]]]), "line 2: stroke 0: coordinates must be numbers"),
        (_record("cat", []), "line 2: 'drawing' must be a non-empty list"),
    ],
)
def test_bad_ndjson_lines_are_named_by_line_number(tmp_path, line, message):
    path = tmp_path / "cat.ndjson"
    path.write_text(_record("cat", [[[0, 1], [0, 1]]]) + "\n" + line + "\n")
    with pytest.raises(DataFormatError, match=message.replace("(", r"\(")) as info:
        read_all(open_source(path))
    assert str(path) in str(info.value)


def test_corrupt_gzip_is_named(tmp_path, raw_lines):
    path = tmp_path / "raw.ndjson.gz"
    data = gzip.compress("".join(raw_lines).encode())
    path.write_bytes(data[: len(data) // 2] + b"\x00" * 64)
    with pytest.raises(DataFormatError, match=r"raw\.ndjson\.gz.*corrupt gzip"):
        read_all(open_source(path))


# --- Quick, Draw! binary -------------------------------------------------------------


def _pack_drawing(key, strokes):
    out = struct.pack("<Q2sBIH", key, b"GB", 1, 1490000000, len(strokes))
    for xs, ys in strokes:
        out += struct.pack("<H", len(xs)) + bytes(xs) + bytes(ys)
    return out


def test_binary_format(tmp_path):
    a = [([0, 10, 255], [0, 20, 30]), ([5], [6])]
    b = [([1, 2], [3, 4])]
    path = tmp_path / "full_binary_house.bin"
    path.write_bytes(_pack_drawing(42, a) + _pack_drawing(43, b))
    chunks, labels = read_all(open_source(path))
    assert labels == ["house", "house"]
    assert chunks[0].ids == ["42", "43"]
    np.testing.assert_array_equal(chunks[0].strokes[0][0], [[0, 0], [10, 20], [255, 30]])
    np.testing.assert_array_equal(chunks[0].strokes[0][1], [[5, 6]])


def test_truncated_binary_names_the_drawing(tmp_path):
    path = tmp_path / "house.bin"
    data = _pack_drawing(1, [([0, 1], [0, 1])]) + _pack_drawing(2, [([0, 1, 2], [0, 1, 2])])
    path.write_bytes(data[:-2])
    with pytest.raises(DataFormatError, match="drawing 1: truncated"):
        read_all(open_source(path))


# --- sketch-rnn ----------------------------------------------------------------------


def test_sketchrnn_npz_keeps_its_splits_and_rebuilds_strokes(tmp_path):
    seqs = np.empty(2, dtype=object)
    seqs[0] = np.array([[1, 2, 0], [3, 4, 1], [10, 0, 0], [1, 1, 1]], dtype=np.int16)
    seqs[1] = np.array([[5, 5, 1]], dtype=np.int16)
    path = tmp_path / "sketchrnn_cat.npz"
    np.savez(path, train=seqs, valid=seqs[:1], test=seqs[1:])
    assert detect_format(path) == "sketchrnn-npz"
    chunks = list(open_source(path).iter_chunks())
    assert [(c.split, len(c)) for c in chunks] == [("train", 2), ("valid", 1), ("test", 1)]
    first = chunks[0].strokes[0]
    np.testing.assert_array_equal(first[0], [[1, 2], [4, 6]])
    np.testing.assert_array_equal(first[1], [[14, 6], [15, 7]])
    assert chunks[0].labels[0] == "cat"


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_sketchrnn_npz_never_runs_arbitrary_pickles(tmp_path):
    arr = np.empty(1, dtype=object)
    arr[0] = _Evil()
    path = tmp_path / "evil.npz"
    np.savez(path, train=arr)
    with pytest.raises(DataFormatError, match="refusing to load builtins.print"):
        list(open_source(path).iter_chunks())


# --- MNIST ---------------------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray, magic: int, gz: bool) -> None:
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.fixture
def mnist_dir(tmp_path, shared_data):
    m = np.load(shared_data / "mnist.npz")
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", m["x_train"][:30], 0x803, True)
    _write_idx(
        tmp_path / "train-labels-idx1-ubyte.gz", m["y_train"][:30].astype(np.uint8), 0x801, True
    )
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", m["x_test"][:10], 0x803, False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", m["y_test"][:10].astype(np.uint8), 0x801, False)
    return tmp_path, m


def test_mnist_idx_folder_keeps_the_official_test_split(mnist_dir):
    folder, m = mnist_dir
    assert detect_format(folder) == "mnist-idx"
    chunks = list(open_source(folder).iter_chunks())
    by_split = {s: [c for c in chunks if c.split == s] for s in ("train", "test")}
    test_images = np.concatenate([c.images for c in by_split["test"]])
    np.testing.assert_array_equal(test_images, m["x_test"][:10])
    train_labels = [lab for c in by_split["train"] for lab in c.labels]
    assert train_labels == [str(v) for v in m["y_train"][:30]]


def test_mnist_wrong_magic(mnist_dir):
    folder, m = mnist_dir
    _write_idx(folder / "t10k-images-idx3-ubyte", m["x_test"][:10], 0x801, False)
    with pytest.raises(
        DataFormatError, match=r"t10k-images-idx3-ubyte: wrong magic number 0x00000801"
    ):
        list(open_source(folder).iter_chunks())


def test_mnist_label_count_mismatch(mnist_dir):
    folder, m = mnist_dir
    _write_idx(folder / "t10k-labels-idx1-ubyte", m["y_test"][:9].astype(np.uint8), 0x801, False)
    with pytest.raises(DataFormatError, match="9 labels for 10 images"):
        list(open_source(folder).iter_chunks())


def test_mnist_csv_with_header_and_a_bad_row(tmp_path, shared_data):
    m = np.load(shared_data / "mnist.npz")
    rows = [",".join(["label"] + [f"p{i}" for i in range(784)])]
    rows += [",".join(map(str, [m["y_test"][i], *m["x_test"][i].ravel()])) for i in range(4)]
    path = tmp_path / "mnist_test.csv"
    path.write_text("\n".join(rows) + "\n")
    chunks, labels = read_all(open_source(path))
    assert labels == [str(v) for v in m["y_test"][:4]] and chunks[0].split == "test"
    np.testing.assert_array_equal(np.concatenate([c.images for c in chunks]), m["x_test"][:4])
    path.write_text("\n".join(rows[:3] + ["7,1,2,3"]) + "\n")
    with pytest.raises(DataFormatError, match="line 4: expected a label and 784 pixels"):
        read_all(open_source(path))


# --- npz -----------------------------------------------------------------------------


def test_npz_with_x_y_classes(shared_data):
    path = shared_data / "quickdraw_345x80.npz"
    _, labels = read_all(open_source(path, categories=["cat", "sun"], per_class=2))
    assert sorted(labels) == ["cat", "cat", "sun", "sun"]


def test_mnist_style_npz_keeps_the_test_split(tmp_path, shared_data):
    m = np.load(shared_data / "mnist.npz")
    path = tmp_path / "digits.npz"
    np.savez(
        path,
        x_train=m["x_train"][:6],
        y_train=m["y_train"][:6],
        x_test=m["x_test"][:4],
        y_test=m["y_test"][:4],
    )
    chunks = list(open_source(path).iter_chunks())
    assert {c.split for c in chunks} == {"train", "test"}
    assert sum(len(c) for c in chunks if c.split == "test") == 4


# --- image folders -------------------------------------------------------------------


def _photo_folder(root: Path, shared_data: Path) -> Path:
    src = shared_data / "photos" / "cats_vs_dogs"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i, f in enumerate(sorted((src / label).iterdir())[:3]):
            Image.open(f).resize((40, 30)).save(root / label / f"{i}.{['jpg', 'png', 'webp'][i]}")
    (root / "dog" / ".hidden.jpg").write_bytes(b"not an image")
    return root


def test_image_folder_reads_every_format_in_sorted_order(tmp_path, shared_data):
    root = _photo_folder(tmp_path / "photos", shared_data)
    assert detect_format(root) == "imagefolder"
    chunks, labels = read_all(open_source(root))
    assert labels == ["cat"] * 3 + ["dog"] * 3
    images = [img for c in chunks for img in c.images]
    assert all(img.shape == (30, 40, 3) and img.dtype == np.uint8 for img in images)


def test_unreadable_image_is_an_error_or_skipped(tmp_path, shared_data, caplog):
    root = _photo_folder(tmp_path / "photos", shared_data)
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(DataFormatError, match=r"broken\.jpg: cannot read the image"):
        read_all(open_source(root))
    source = open_source(root, skip_bad=True)
    _, labels = read_all(source)
    assert labels.count("cat") == 3 and source.skipped == [str(root / "cat" / "broken.jpg")]
    assert "skipped 1 unreadable image" in caplog.text


def test_image_bombs_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("L", (300, 300)).save(tmp_path / "a" / "big.png")
    with pytest.raises(DataFormatError, match="more than 10000 pixels"):
        read_all(open_source(tmp_path, max_pixels=10_000))


def test_stanford_dogs_layout_and_crop_to_box(tmp_path):
    img_dir = tmp_path / "Images" / "n02085620-Chihuahua"
    ann_dir = tmp_path / "Annotation" / "n02085620-Chihuahua"
    img_dir.mkdir(parents=True)
    ann_dir.mkdir(parents=True)
    pixels = np.zeros((50, 80, 3), np.uint8)
    pixels[10:30, 20:60] = 200
    Image.fromarray(pixels).save(img_dir / "n02085620_1.png")
    (ann_dir / "n02085620_1").write_text(
        "<annotation><object><name>Chihuahua</name><bndbox><xmin>20</xmin><ymin>10</ymin>"
        "<xmax>60</xmax><ymax>30</ymax></bndbox></object></annotation>"
    )
    assert detect_format(tmp_path) == "stanford-dogs"
    full = next(iter(open_source(tmp_path).iter_chunks()))
    assert full.labels == ["Chihuahua"] and full.images[0].shape == (50, 80, 3)
    cropped = next(iter(open_source(tmp_path, crop_to_box=True).iter_chunks()))
    assert cropped.images[0].shape == (20, 40, 3) and cropped.images[0].min() == 200


def test_unknown_extension_needs_a_format(tmp_path):
    (tmp_path / "data.xyz").write_text("?")
    with pytest.raises(DataFormatError, match="pass --format"):
        detect_format(tmp_path / "data.xyz")
