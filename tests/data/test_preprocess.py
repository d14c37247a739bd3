"""Recipes on real digits, drawings and photos, and on hand-made cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from imgclass.data.preprocess import (
    RECIPES,
    apply_recipe,
    center_of_mass,
    centroid,
    fit_center,
    get_recipe,
    invert_auto,
    prepare_raw_image,
    stroke_width,
)
from imgclass.data.render import render_strokes
from imgclass.errors import ConfigError


@pytest.fixture(scope="module")
def mnist(shared_data):
    m = np.load(shared_data / "mnist.npz")
    return m["x_test"][:500]


@pytest.fixture(scope="module")
def doodles(shared_data):
    return np.load(shared_data / "quickdraw_345x80.npz")["x"][::50]


def test_mnist_recipe_leaves_real_mnist_digits_almost_unchanged(mnist):
    out = apply_recipe(get_recipe("mnist"), mnist)
    per_image = np.abs(out.astype(int) - mnist).mean(axis=(1, 2))
    assert np.median(per_image) < 0.5 and per_image.mean() < 1.0  # measured: 0.0 and ~0.02


def test_mnist_recipe_fits_20x20_and_centres_mass_like_mnist(mnist):
    real = np.array([center_of_mass(d) for d in mnist])
    assert np.allclose(real.mean(axis=0), [14, 14], atol=0.1)  # MNIST's own convention
    big = np.zeros((1, 200, 300), np.uint8)
    big[0, 20:120, 30:80] = 255  # a 100 x 50 bar, off-centre
    out = fit_center(big)[0]
    rows, cols = np.nonzero(out > 16)
    assert rows.max() - rows.min() + 1 == 20 and cols.max() - cols.min() + 1 == 10
    assert np.allclose(center_of_mass(out), (14, 14), atol=0.5)


def test_centroid_moves_a_single_pixel_to_the_middle():
    img = np.zeros((1, 28, 28), np.uint8)
    img[0, 3, 5] = 255
    out = centroid(img)[0]
    assert out[14, 14] == 255 and out.sum() == 255


def test_invert_auto_handles_both_polarities(mnist):
    digit = mnist[0]
    np.testing.assert_array_equal(invert_auto([255 - digit])[0], digit)
    np.testing.assert_array_equal(invert_auto([digit])[0], digit)


def test_sketch_recipe_makes_thin_and_thick_drawings_look_alike(doodles):
    # The same drawing as a thin 1 px line and as Google's thick line.
    drawing = [
        np.array([[0, 0], [255, 0], [255, 255], [0, 255], [0, 0]], np.float32),
        np.array([[60, 60], [200, 200]], np.float32),
    ]
    thick = render_strokes(drawing, size=28, line_diameter=40)
    thin = render_strokes(drawing, size=28, line_diameter=12)
    recipe = get_recipe("sketch")
    a, b = apply_recipe(recipe, np.stack([thick, thin]))
    before = abs(stroke_width(thick) - stroke_width(thin))
    after = abs(stroke_width(a) - stroke_width(b))
    assert after < before
    thin_real = apply_recipe(recipe, doodles)
    widths = [stroke_width(img) for img in thin_real]
    assert np.median(widths) >= 1.5  # the real thin-line bitmaps (width ~1) got thicker


def test_sketch_recipe_centres_top_left_aligned_drawings(doodles):
    out = apply_recipe(get_recipe("sketch"), doodles)
    coms = np.array([center_of_mass(i) for i in out if i.any()])
    assert np.allclose(coms.mean(axis=0), [14, 14], atol=0.5)
    rows = [np.nonzero(i.any(axis=1))[0] for i in out if i.any()]
    assert max(r.max() - r.min() + 1 for r in rows) <= 26


def test_photo_recipe_on_real_photos(shared_data):
    files = sorted((shared_data / "photos" / "cats_vs_dogs" / "cat").iterdir())[:3]
    photos = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    out = apply_recipe(get_recipe("photo"), photos)
    assert out.shape == (3, 224, 224, 3) and out.dtype == np.uint8
    clean = apply_recipe(get_recipe("photo-clean", size=64), photos)
    assert clean.shape == (3, 64, 64, 3)
    assert not np.array_equal(clean, apply_recipe(get_recipe("photo", size=64), photos))


def test_blank_images_do_not_crash():
    out = apply_recipe(get_recipe("sketch"), np.zeros((2, 28, 28), np.uint8))
    assert out.shape == (2, 28, 28) and out.max() == 0


def test_prepare_raw_image_composites_transparency_on_white():
    rgba = np.zeros((280, 280, 4), np.uint8)  # transparent canvas ...
    rgba[100:180, 130:150] = (0, 0, 0, 255)  # ... with a black bar drawn on it
    gray = prepare_raw_image(Image.fromarray(rgba, "RGBA"), get_recipe("mnist"))
    assert gray.shape == (280, 280) and gray[0, 0] == 255 and gray[120, 140] == 0
    out = apply_recipe(get_recipe("mnist"), [gray])[0]
    assert out[14, 14] > 200 and out[0, 0] == 0  # inverted to ink on black, centred


def test_recipes_are_data_and_validated():
    for name in RECIPES:
        recipe = get_recipe(name)
        assert json.loads(json.dumps(recipe)) == recipe
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        get_recipe("nope")
    bad = get_recipe("mnist")
    bad["steps"].append({"op": "fit_center", "bogus": 1})
    with pytest.raises(ConfigError, match=r"step 2 \(fit_center\): unknown parameter"):
        get_recipe(bad)
    assert get_recipe("sketch", size=56)["steps"][-1] == {"op": "fit_center", "box": 48, "size": 56}
