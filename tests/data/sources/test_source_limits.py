"""Every reader checks what a file declares against ``ReadLimits`` before allocating,
and hands over chunks bounded in bytes (the CLI-level cases are in tests/hostile)."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import zipfile

import numpy as np
import pytest
from PIL import Image

from imgclass.data.limits import ReadLimits, parse_bytes
from imgclass.data.prepare import decode_side
from imgclass.data.preprocess import apply_recipe, get_recipe
from imgclass.data.sources import open_source
from imgclass.data.sources.imagefolder import load_image
from imgclass.data.sources.sketchrnn import NumpyOnlyUnpickler
from imgclass.errors import ConfigError, DataFormatError

SMALL_CHUNKS = ReadLimits(chunk_bytes=1)  # every chunk holds one example


def objects(*seqs):
    arr = np.empty(len(seqs), dtype=object)
    arr[:] = list(seqs)
    return arr


def stroke3(n, seed):
    rng = np.random.default_rng(seed)
    seq = rng.integers(-20, 20, size=(n, 3)).astype(np.int16)
    seq[:, 2] = rng.random(n) < 0.2
    return seq


def test_sizes_parse_and_limits_must_be_positive():
    assert parse_bytes("512M") == 512 << 20 and parse_bytes("2GiB") == 2 << 30
    assert parse_bytes("1000") == 1000 and parse_bytes("1.5K") == 1536
    for bad in ("", "12Q", "-1", "0"):
        with pytest.raises(ValueError):
            parse_bytes(bad)
    with pytest.raises(ConfigError, match="max_array_bytes must be positive"):
        ReadLimits(max_array_bytes=0)


# --- the sketch-rnn unpickler ---------------------------------------------------------


def unpickle(data: bytes, budget: int = 1 << 20):
    return NumpyOnlyUnpickler(data, budget, len(data)).load()


def test_unpickler_rebuilds_what_numpy_pickles_in_the_protocols_of_npy_files():
    value = objects(stroke3(5, 0), stroke3(3, 1).astype(np.float64), stroke3(1, 2))
    for protocol in (2, 3, 4):  # np.save writes 3 or 4, Python 2 wrote 2
        back = unpickle(pickle.dumps(value, protocol=protocol))
        assert back.dtype == object and len(back) == 3
        for a, b in zip(value, back, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


def test_unpickler_meters_what_the_stream_builds_not_only_arrays():
    many_lists = b"\x80\x02]" + b"(" + b"]" * 100_000 + b"e."  # 100,000 empty lists
    with pytest.raises(pickle.UnpicklingError, match="needs more than 1.0 MiB"):
        unpickle(many_lists)
    assert unpickle(many_lists, budget=64 << 20) == [[]] * 100_000


def test_unpickler_checks_an_array_before_numpy_allocates_it():
    direct = b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x00\x10\x85X\x02\x00\x00\x00i8\x86R."
    with pytest.raises(pickle.UnpicklingError, match=r"shape \(268435456,\) int64 \(2\.0 GiB\)"):
        unpickle(direct)
    assert unpickle(direct.replace(b"\x00\x00\x00\x10", b"\x03\x00\x00\x00")).shape == (3,)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x02}.", "opcode b'}' is not used by numpy arrays"),  # EMPTY_DICT
        (b"\x80\x02cnumpy\ndtype\nU\x03V16\x89\x88\x87R.", "unexpected dtype 'V16'"),
        (b"\x80\x02cbuiltins\nlist\n.", "refusing to load builtins.list"),
    ],
)
def test_unpickler_refuses_what_array_pickles_never_hold(data, message):
    with pytest.raises(pickle.UnpicklingError, match=message):
        unpickle(data)


def test_a_dtype_built_from_a_pickle_is_a_copy_never_numpys_own():
    before = np.dtype("i2").byteorder
    # dtype("i2", align=False, copy=False), then a BUILD that would make it big-endian
    evil = b"\x80\x02cnumpy\ndtype\nU\x02i2\x89\x89\x87R(K\x03U\x01>NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb."
    built = unpickle(evil)
    assert np.dtype("i2").byteorder == before and built is not np.dtype("i2")


def test_sketchrnn_split_over_the_array_limit_names_the_flag(tmp_path):
    path = tmp_path / "cat.npz"
    np.savez(path, train=objects(*[stroke3(50, i) for i in range(200)]))
    assert len(list(open_source(path).iter_chunks())[0]) == 200
    with pytest.raises(DataFormatError, match=r"cat\.npz: array 'train'.*--max-array-bytes"):
        list(open_source(path, limits=ReadLimits(max_array_bytes=20_000)).iter_chunks())


def test_sketchrnn_chunks_bounded_in_bytes_give_the_same_strokes(tmp_path):
    path = tmp_path / "cat.npz"
    seqs = [stroke3(n, n) for n in (4, 9, 1, 30, 7)]
    np.savez(path, train=objects(*seqs))
    whole = list(open_source(path).iter_chunks())
    small = list(open_source(path, limits=SMALL_CHUNKS).iter_chunks())
    assert [len(c) for c in whole] == [5] and [len(c) for c in small] == [1] * 5
    assert [i for c in small for i in c.ids] == whole[0].ids
    for a, b in zip(whole[0].strokes, [d for c in small for d in c.strokes], strict=True):
        assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


# --- npz, npy, IDX, CSV, ndjson, bin ------------------------------------------------------


def test_npz_declaring_more_than_it_holds_is_refused_before_reading(tmp_path):
    path = tmp_path / "d.npz"
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "|u1", "fortran_order": False, "shape": (10**6, 28, 28)}
    )
    labels = io.BytesIO()
    np.save(labels, np.zeros(10**6, dtype=np.int8))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", buf.getvalue() + bytes(784))
        zf.writestr("y.npy", labels.getvalue())
    with pytest.raises(DataFormatError, match=r"array 'x' is cut short: shape \(1000000, 28, 28\)"):
        list(open_source(path, format="npz").iter_chunks())


def test_npz_labels_are_counted_from_their_header_and_images_read_in_byte_chunks(tmp_path):
    path = tmp_path / "d.npz"
    x = np.arange(6 * 4 * 5, dtype=np.uint8).reshape(6, 4, 5)
    np.savez_compressed(path, x=x, y=np.arange(7) % 2)
    with pytest.raises(DataFormatError, match="7 labels for 6 images in x"):
        list(open_source(path).iter_chunks())
    np.savez_compressed(path, x=x, y=np.arange(6) % 2)
    chunks = list(open_source(path, limits=ReadLimits(chunk_bytes=45)).iter_chunks())
    assert [len(c) for c in chunks] == [2, 2, 2]
    np.testing.assert_array_equal(np.concatenate([c.images for c in chunks]), x)
    with pytest.raises(DataFormatError, match=r"5x4 is more than the limit of 10 pixels"):
        list(open_source(path, limits=ReadLimits(max_image_pixels=10)).iter_chunks())


def test_idx_pixels_per_image_are_checked_from_the_header(tmp_path):
    images = struct.pack(">IIII", 0x803, 1, 3000, 3000) + bytes(9_000_000)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(images)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, 1) + b"\x01")
    source = open_source(tmp_path, limits=ReadLimits(max_image_pixels=1_000_000))
    with pytest.raises(DataFormatError, match=r"3000x3000 is more than the limit of 1,000,000"):
        list(source.iter_chunks())


def test_csv_and_ndjson_lines_are_bounded(tmp_path):
    csv_path = tmp_path / "mnist_train.csv"
    csv_path.write_text("0" + ",0" * 784 + "\n" + "1" + ",0" * 100_000 + "\n")
    limits = ReadLimits(max_line_bytes=10_000)
    with pytest.raises(DataFormatError, match=r"mnist_train\.csv, line 2: line longer than 10000"):
        list(open_source(csv_path, limits=limits).iter_chunks())
    nd = tmp_path / "cat.ndjson"
    nd.write_text(json.dumps({"word": "cat", "drawing": [[list(range(5000)), [0] * 5000]]}))
    with pytest.raises(DataFormatError, match=r"cat\.ndjson, line 1: line longer than 10000"):
        list(open_source(nd, limits=limits).iter_chunks())


def test_stroke_chunks_are_bounded_in_bytes(tmp_path):
    line = json.dumps({"word": "cat", "drawing": [[[0, 1, 2], [3, 4, 5]]]}) + "\n"
    (tmp_path / "cat.ndjson").write_text(line * 5)
    record = struct.pack("<Q2sBIHH", 1, b"GB", 1, 0, 1, 2) + bytes([1, 2, 3, 4])
    (tmp_path / "cat.bin.gz").write_bytes(gzip.compress(record * 5))
    for name in ("cat.ndjson", "cat.bin.gz"):
        source = open_source(tmp_path / name, limits=SMALL_CHUNKS)
        assert [len(c) for c in source.iter_chunks()] == [1] * 5
        assert [len(c) for c in open_source(tmp_path / name).iter_chunks()] == [5]


# --- photos ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_photos_decoded_reduced_give_what_the_recipe_makes_of_them_whole(
    tmp_path, shared_data, fmt
):
    photo = sorted((shared_data / "photos" / "cats_vs_dogs" / "cat").glob("*.jpg"))[0]
    big = Image.open(photo).convert("RGB").resize((2400, 1800), Image.Resampling.BICUBIC)
    path = tmp_path / f"big.{fmt.lower()}"
    big.save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    recipe = get_recipe("photo")
    side = decode_side(recipe)
    assert side == 256
    reduced = load_image(path, min_side=side)
    assert side <= min(reduced.shape[:2]) < 2 * side
    whole = load_image(path)
    a = apply_recipe(recipe, [reduced]).astype(np.int16)
    b = apply_recipe(recipe, [whole]).astype(np.int16)
    assert np.abs(a - b).mean() < 2.5  # rounding and the JPEG's own scaled decoding


def test_image_folder_chunks_are_bounded_in_bytes_and_boxes_follow_the_reduction(tmp_path):
    (tmp_path / "a").mkdir()
    for i in range(3):
        Image.new("RGB", (1200, 900), (i * 80, 10, 10)).save(tmp_path / "a" / f"{i}.jpg")
    source = open_source(tmp_path, limits=SMALL_CHUNKS, min_side=100)
    chunks = list(source.iter_chunks())
    assert [len(c) for c in chunks] == [1, 1, 1]
    assert chunks[0].images[0].shape == (113, 150, 3)  # 1/8 scale: 900/8 rounded up
    box = load_image(tmp_path / "a" / "0.jpg", box=(600, 0, 1200, 900), min_side=100)
    assert box.shape == (225, 150, 3)  # the box's 600 x 900 at 1/4 scale


def test_decode_side_keeps_a_margin_for_recipes_that_crop_first():
    assert decode_side(get_recipe("photo-clean")) == 256
    assert decode_side(get_recipe("sketch")) == 512
    assert decode_side(get_recipe("photo", size=600)) == 686


def test_prepare_reads_chunks_bounded_in_bytes_whatever_the_image_size(tmp_path):
    from imgclass.data.prepare import CHUNK_OUT_BYTES, READ_BYTES, PrepareOptions, Preparer

    (tmp_path / "a").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "a" / "0.png")
    for size, expected in ((224, 64), (1024, CHUNK_OUT_BYTES // (1024 * 1024 * 3))):
        options = PrepareOptions(inputs=[str(tmp_path)], out=str(tmp_path / "out"), size=size)
        preparer = Preparer(options)
        assert preparer._chunk_size() == expected
        assert preparer.sources[0].min_side == round(size * 8 / 7)
        assert preparer.sources[0].limits.chunk_bytes == min(16 << 20, READ_BYTES)
