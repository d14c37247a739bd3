"""Photo ops on real photos, and decoded user images of every kind."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imgclass.data.preprocess import (
    apply_recipe,
    clahe,
    denoise,
    get_recipe,
    prepare_raw_image,
    resize_crop,
)
from imgclass.errors import DataFormatError


@pytest.fixture(scope="module")
def photos(shared_data) -> list[np.ndarray]:
    """Six real photos of varied sizes and orientations."""
    folder = shared_data / "photos" / "cats_vs_dogs"
    files = sorted((folder / "cat").iterdir())[:3] + sorted((folder / "dog").iterdir())[:3]
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def pil_resize_crop(photo: np.ndarray, size: int, shorter: int) -> np.ndarray:
    """An independent reference: PIL's box filter, then the central square."""
    h, w = photo.shape[:2]
    factor = shorter / min(h, w)
    nh, nw = round(h * factor), round(w * factor)
    img = Image.fromarray(photo).resize((nw, nh), Image.Resampling.BOX)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))


def test_photo_recipe_matches_an_independent_resize_and_centre_crop(photos):
    out = apply_recipe(get_recipe("photo"), photos)
    assert out.shape == (6, 224, 224, 3) and out.dtype == np.uint8
    for got, photo in zip(out, photos, strict=True):
        reference = pil_resize_crop(photo, 224, 256)
        # Measured 0.7 to 2.2 grey levels; the most where a photo is enlarged, which we
        # do bilinearly and the box filter does not.
        assert np.abs(got.astype(int) - reference).mean() < 3.0


def test_resize_crop_handles_gray_rgba_and_tiny_images():
    gray = np.tile(np.arange(40, dtype=np.uint8), (10, 1))  # 10 x 40, a left-right ramp
    (out,) = resize_crop([gray], size=8)
    assert out.shape == (8, 8, 3) and (out[..., 0] == out[..., 1]).all()
    assert (np.diff(out[..., 0].astype(int), axis=1) > 0).all()  # the ramp survives
    rgba = np.zeros((3, 2, 4), np.uint8)  # transparent: white paper
    assert resize_crop([rgba], size=16)[0].min() == 255


def test_clahe_spreads_a_dull_photos_lightness_and_keeps_its_size(photos):
    dull = (photos[0].astype(np.float32) * 0.2 + 100).astype(np.uint8)  # levels 100..151
    (out,) = clahe([dull])
    assert out.shape == dull.shape

    def lightness(img: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(img).convert("L"), dtype=np.float64)

    assert lightness(out).std() > 2 * lightness(dull).std()
    gray = lightness(dull).astype(np.uint8)
    assert clahe([gray])[0].std() > 2 * gray.std()


def test_denoise_brings_a_noisy_photo_back_towards_the_clean_one(photos):
    clean = resize_crop(photos[:1], size=64)[0].astype(np.float64)
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 15, clean.shape), 0, 255).astype(np.uint8)
    (out,) = denoise([noisy], strength=10.0)
    error_before = ((noisy - clean) ** 2).mean()
    error_after = ((out - clean) ** 2).mean()
    assert error_after < 0.6 * error_before


def test_photo_clean_changes_the_photo_photo_does_not(photos):
    plain = apply_recipe(get_recipe("photo", size=64), photos[:2])
    cleaned = apply_recipe(get_recipe("photo-clean", size=64), photos[:2])
    assert cleaned.shape == plain.shape and np.abs(cleaned.astype(int) - plain).mean() > 5


def _encoded(image: Image.Image, fmt: str, **options) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    buffer.seek(0)
    return Image.open(buffer)


def test_prepare_raw_image_composites_a_transparent_canvas_on_white():
    rgba = np.zeros((280, 280, 4), np.uint8)  # a transparent canvas ...
    rgba[100:180, 130:150] = (0, 0, 0, 255)  # ... with a black bar drawn on it
    recipe = get_recipe("mnist")
    gray = prepare_raw_image(_encoded(Image.fromarray(rgba, "RGBA"), "PNG"), recipe)
    assert gray.shape == (280, 280) and gray[0, 0] == 255 and gray[120, 140] == 0
    out = apply_recipe(recipe, [gray])[0]
    assert out[14, 14] == 255 and out[0, 0] == 0  # inverted to ink on black, centred


@pytest.mark.parametrize("mode", ["L", "LA", "P", "1", "I;16", "RGB", "CMYK"])
def test_prepare_raw_image_reads_every_pil_mode(mode):
    rgb = np.full((12, 10, 3), 255, np.uint8)
    rgb[3:9, 4:6] = 0  # a black bar on white
    image = Image.fromarray(rgb).convert(mode)
    if mode == "I;16":
        image = Image.fromarray(
            np.asarray(Image.fromarray(rgb).convert("L")).astype(np.uint16) * 257
        )
    gray = prepare_raw_image(image, get_recipe("sketch"))
    assert gray.shape == (12, 10) and gray.dtype == np.uint8
    assert gray[0, 0] >= 250 and gray[5, 4] <= 5, mode
    colour = prepare_raw_image(image, get_recipe("photo"))
    assert colour.shape == (12, 10, 3)


def test_prepare_raw_image_turns_phone_photos_upright():
    image = Image.new("RGB", (40, 20), "white")  # stored landscape ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... with "rotate 90 degrees clockwise to view"
    jpeg = _encoded(image, "JPEG", exif=exif.tobytes())
    assert prepare_raw_image(jpeg, get_recipe("photo")).shape == (40, 20, 3)


def test_prepare_raw_image_takes_arrays_and_refuses_floats():
    recipe = get_recipe("mnist")
    assert prepare_raw_image(np.ones((4, 5), bool), recipe).max() == 255
    assert prepare_raw_image(np.full((4, 5), 65535, np.uint16), recipe).max() == 255
    assert prepare_raw_image(np.zeros((4, 5, 1), np.uint8), recipe).shape == (4, 5)
    with pytest.raises(DataFormatError, match="expected uint8 pixels"):
        prepare_raw_image(np.zeros((4, 5)), recipe)
    with pytest.raises(DataFormatError, match=r"got \(4, 5, 2\)"):
        prepare_raw_image(np.zeros((4, 5, 2), np.uint8), recipe)
