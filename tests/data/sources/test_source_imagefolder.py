"""Image folders (a subfolder per class) and the Stanford Dogs layout."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from imgclass.data.limits import ReadLimits
from imgclass.data.sources import detect_format, open_source
from imgclass.errors import DataFormatError

RNG = np.random.default_rng(0)


def pixels(h, w):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(path, array, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return array


def images_of(chunks):
    return [img for c in chunks for img in c.images]


@pytest.fixture
def folder(tmp_path, shared_data):
    """cat/ and dog/ with every extension (any case) plus files that must be ignored."""
    root = tmp_path / "photos"
    real = sorted((shared_data / "photos" / "cats_vs_dogs" / "cat").iterdir())[0]
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.JPG").write_bytes(real.read_bytes())
    expected = {
        "cat/b.png": save(root / "cat" / "b.png", pixels(12, 9)),
        "cat/c.webp": save(root / "cat" / "c.webp", pixels(7, 5), lossless=True),
        "dog/a.BMP": save(root / "dog" / "a.BMP", pixels(6, 6)),
        "dog/b.Png": save(root / "dog" / "b.Png", pixels(3, 8)),
    }
    expected["cat/a.JPG"] = np.asarray(Image.open(real).convert("RGB"))
    (root / "dog" / ".hidden.png").write_bytes(b"not an image")
    (root / "dog" / "notes.txt").write_text("not an image either")
    save(root / ".cache" / "x.png", pixels(2, 2))
    return root, expected


def test_classes_files_and_pixels_in_sorted_order(folder, read_all):
    root, expected = folder
    assert detect_format(root) == "imagefolder"
    source = open_source(root)
    assert source.classes() == ["cat", "dog"]
    chunks, labels = read_all(source, 2)
    ids = [i for c in chunks for i in c.ids]
    assert ids == ["cat/a.JPG", "cat/b.png", "cat/c.webp", "dog/a.BMP", "dog/b.Png"]
    assert labels == ["cat"] * 3 + ["dog"] * 2
    for image, name in zip(images_of(chunks), ids, strict=True):
        assert image.dtype == np.uint8
        np.testing.assert_array_equal(image, expected[name])
    assert all(c.ink == "unknown" for c in chunks)


def test_categories_and_per_class(folder, read_all):
    root, _ = folder
    chunks, labels = read_all(open_source(root, categories=["dog"], per_class=1))
    assert labels == ["dog"] and chunks[0].ids == ["dog/a.BMP"]


def test_exif_orientation_is_applied(tmp_path):
    stored = pixels(2, 4)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    save(tmp_path / "a" / "photo.png", stored, exif=exif)
    (image,) = images_of(open_source(tmp_path).iter_chunks())
    np.testing.assert_array_equal(image, np.rot90(stored, k=-1))


def test_modes_become_rgb(tmp_path):
    gray = RNG.integers(0, 256, (3, 4), dtype=np.uint8)
    (tmp_path / "a").mkdir()
    Image.fromarray(gray, "L").save(tmp_path / "a" / "1_gray.png")
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = [10, 20, 30, 255]  # one opaque pixel, the rest fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a" / "2_rgba.png")
    deep = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "a" / "3_16bit.png")
    gray_out, rgba_out, deep_out = images_of(open_source(tmp_path).iter_chunks())
    np.testing.assert_array_equal(gray_out, np.repeat(gray[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(rgba_out[0, 0], [10, 20, 30])
    assert (rgba_out[1, 1] == 255).all()  # transparent -> white
    np.testing.assert_array_equal(deep_out[..., 0], [[0, 100, 255]])


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    save(tmp_path / "a" / "big.png", np.zeros((300, 300, 3), np.uint8))
    limits = ReadLimits(max_image_pixels=10_000)
    with pytest.raises(DataFormatError, match=r"big\.png: 300x300 is more than .* 10,000 pixels"):
        list(open_source(tmp_path, limits=limits).iter_chunks())


def test_unreadable_image_is_an_error_or_skipped_with_a_count(folder, caplog, read_all):
    root, _ = folder
    broken = root / "cat" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 a JPEG header and nothing else")
    with pytest.raises(DataFormatError, match=r"cat/broken\.jpg: cannot read the image"):
        read_all(open_source(root))
    source = open_source(root, skip_bad=True)
    with caplog.at_level(logging.WARNING):
        chunks, labels = read_all(source)
    assert labels == ["cat"] * 3 + ["dog"] * 2
    assert source.skipped == [str(broken)]
    assert chunks[-1].meta["skipped"] == 1
    assert "broken.jpg" in caplog.text and "skipped 1 unreadable image" in caplog.text
    read_all(source)
    assert source.skipped == [str(broken)]  # a second pass counts afresh


def test_truncated_jpeg_is_unreadable(tmp_path, shared_data):
    real = sorted((shared_data / "photos" / "cats_vs_dogs" / "dog").iterdir())[0]
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "cut.jpg").write_bytes(real.read_bytes()[:2000])
    with pytest.raises(DataFormatError, match=r"cut\.jpg: cannot read the image"):
        list(open_source(tmp_path).iter_chunks())


def test_a_folder_without_class_folders(tmp_path):
    with pytest.raises(DataFormatError, match="no class folders"):
        list(open_source(tmp_path, format="imagefolder").iter_chunks())


# --- Stanford Dogs ---------------------------------------------------------------------

VOC = "<annotation><size><width>{w}</width><height>{h}</height></size>{objects}</annotation>"
BOX = "<object><name>dog</name><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>"


def dogs(root, breed_dir, name, array, boxes, **save_kw):
    save(root / "Images" / breed_dir / f"{name}.png", array, **save_kw)
    if boxes is not None:
        ann = root / "Annotation" / breed_dir / name
        ann.parent.mkdir(parents=True, exist_ok=True)
        h, w = array.shape[:2]
        ann.write_text(VOC.format(w=w, h=h, objects="".join(BOX.format(*b) for b in boxes)))


def test_stanford_dogs_breeds_and_crop_to_the_union_of_boxes(tmp_path, read_all):
    a, b = pixels(50, 80), pixels(20, 30)
    dogs(tmp_path, "n02085620-Chihuahua", "n02085620_1", a, [(20, 10, 40, 30), (30, 5, 60, 25)])
    dogs(tmp_path, "n02085782-Japanese_spaniel", "n02085782_7", b, None)  # no annotation
    assert detect_format(tmp_path) == "stanford-dogs"
    source = open_source(tmp_path)
    assert source.classes() == ["Chihuahua", "Japanese_spaniel"]
    chunks, labels = read_all(source)
    assert labels == ["Chihuahua", "Japanese_spaniel"]
    assert [i for c in chunks for i in c.ids] == [
        "Images/n02085620-Chihuahua/n02085620_1.png",
        "Images/n02085782-Japanese_spaniel/n02085782_7.png",
    ]
    np.testing.assert_array_equal(images_of(chunks)[0], a)
    cropped, whole = images_of(open_source(tmp_path, crop_to_box=True).iter_chunks())
    np.testing.assert_array_equal(cropped, a[5:30, 20:60])
    np.testing.assert_array_equal(whole, b)


def test_boxes_refer_to_stored_pixels_then_orientation_applies(tmp_path):
    stored = pixels(10, 16)
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 degrees counter-clockwise to display"
    dogs(tmp_path, "n1-pug", "n1_1", stored, [(2, 1, 12, 5)], exif=exif)
    (image,) = images_of(open_source(tmp_path, crop_to_box=True).iter_chunks())
    np.testing.assert_array_equal(image, np.rot90(stored[1:5, 2:12], k=1))


def test_bad_annotation_is_named_or_skipped(tmp_path):
    dogs(tmp_path, "n1-pug", "n1_1", pixels(5, 5), [(0, 0, 2, 2)])
    (tmp_path / "Annotation" / "n1-pug" / "n1_1").write_text("<annotation><object>")
    with pytest.raises(DataFormatError, match=r"Annotation/n1-pug/n1_1: not valid PASCAL VOC XML"):
        list(open_source(tmp_path, crop_to_box=True).iter_chunks())
    source = open_source(tmp_path, crop_to_box=True, skip_bad=True)
    assert list(source.iter_chunks()) == [] and len(source.skipped) == 1
    assert len(list(open_source(tmp_path).iter_chunks())) == 1  # without cropping it is not read
