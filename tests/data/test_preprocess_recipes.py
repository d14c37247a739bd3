"""Recipes as data: presets, validation errors that name the fault, overrides, batches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imgclass.data.builtin import BUILTIN_DIR
from imgclass.data.preprocess import (
    OPS,
    RECIPES,
    apply_recipe,
    center_of_mass,
    crop_to_ink,
    fit_box,
    get_recipe,
    invert_auto,
)
from imgclass.errors import ConfigError, DataFormatError


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    with np.load(BUILTIN_DIR / "digits.npz") as d:
        return d["x_test"][:40]


def test_every_preset_survives_a_json_round_trip(digits):
    for name in RECIPES:
        recipe = get_recipe(name)
        assert recipe["name"] == name and {s["op"] for s in recipe["steps"]} <= set(OPS)
        again = json.loads(json.dumps(recipe))
        assert get_recipe(again) == recipe == again
    sketch = get_recipe("sketch")
    np.testing.assert_array_equal(
        apply_recipe(json.loads(json.dumps(sketch)), digits), apply_recipe(sketch, digits)
    )


def test_mnist_preset_is_its_steps_in_order(digits):
    expected = center_of_mass(fit_box(crop_to_ink(invert_auto(digits), 8), 20), 28)
    np.testing.assert_array_equal(apply_recipe(get_recipe("mnist"), digits), expected)


def test_presets_and_results_are_not_shared_state():
    recipe = get_recipe("sketch")
    recipe["steps"][2]["box"] = 10
    recipe["size"][0] = 5
    assert get_recipe("sketch")["steps"][2]["box"] == 24 and RECIPES["sketch"]["size"] == [28, 28]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda r: r["steps"].append({"op": "sharpen"}),
            r"step 4 \(sharpen\): unknown op 'sharpen'",
        ),
        (lambda r: r["steps"][2].update(bogus=1), r"step 2 \(fit_box\): unknown parameter 'bogus'"),
        (
            lambda r: r["steps"][2].update(box="20"),
            r"step 2 \(fit_box\): box must be int, got '20'",
        ),
        (lambda r: r["steps"][2].update(box=0), r"box must be between 1 and 4096, got 0"),
        (lambda r: r["steps"][2].update(box=True), r"box must be int, got True"),
        (lambda r: r["steps"][0].update(flatten=1), r"flatten must be bool, got 1"),
        (lambda r: r["steps"].insert(0, "invert_auto"), r"step 0 \(None\): unknown op"),
        (lambda r: r.update(channels=2), r"channels must be 1 or 3, got 2"),
        (lambda r: r.update(size=[28]), r"size must be \[height, width\]"),
        (lambda r: r.update(colour="red"), r"unknown key\(s\) \['colour'\]"),
        (lambda r: r.pop("steps"), r"recipe 'mnist' has no steps"),
    ],
)
def test_validation_names_the_recipe_step_and_field(change, message):
    recipe = get_recipe("mnist")
    change(recipe)
    with pytest.raises(ConfigError, match=message):
        get_recipe(recipe)
    with pytest.raises(ConfigError, match=message):
        apply_recipe(recipe, np.zeros((1, 28, 28), np.uint8))


def test_unknown_names_and_overrides_are_config_errors():
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; choose one of none, mnist"):
        get_recipe("nope")
    with pytest.raises(ConfigError, match="no step takes 'clip_limit'"):
        get_recipe("sketch", clip_limit=3.0)
    with pytest.raises(ConfigError, match="size must be a whole number from 8 to 4096"):
        get_recipe("sketch", size=4)
    with pytest.raises(ConfigError, match="must be a JSON object"):
        get_recipe(["mnist"])  # type: ignore[arg-type]


def test_size_override_scales_every_length_and_others_set_their_parameter():
    big = get_recipe("sketch", size=56)
    assert big["size"] == [56, 56]
    assert big["steps"][2] == {"op": "fit_box", "box": 48}
    assert big["steps"][4] == {
        "op": "line_width",
        "width": 2.8,
        "max_change": 4.0,
        "thin_margin": 2.0,
    }
    small = get_recipe("photo", size=64)
    assert small["steps"][1] == {"op": "resize_crop", "size": 64}
    assert get_recipe("photo-clean", clip_limit=3.0)["steps"][3]["clip_limit"] == 3.0
    assert get_recipe("sketch", size=[28, 28]) == get_recipe("sketch")


def test_recipes_saved_by_imgclass_0_1_still_run(digits):
    old = {
        "name": "sketch",
        "steps": [{"op": "invert_auto"}, {"op": "line_width", "target": 2.0}, {"op": "fit_center"}],
        "size": [28, 28],
        "channels": 1,
        "doc": "as stored in a 0.1 manifest",
    }
    assert get_recipe(old)["steps"][1] == {"op": "line_width", "width": 2.0}
    fused = {**old, "steps": [{"op": "fit_center", "box": 20, "size": 28}]}
    split = {**old, "steps": get_recipe("mnist")["steps"][1:]}
    split["steps"][0] = {"op": "crop_to_ink"}  # fit_center's threshold is the default 16
    np.testing.assert_array_equal(apply_recipe(fused, digits), apply_recipe(split, digits))


def test_batches_as_arrays_lists_and_colour_agree(digits):
    recipe = get_recipe("mnist")
    as_array = apply_recipe(recipe, digits)
    assert as_array.shape == (40, 28, 28) and as_array.dtype == np.uint8
    np.testing.assert_array_equal(apply_recipe(recipe, list(digits)), as_array)
    rgb = np.repeat(digits[..., None], 3, axis=3)
    np.testing.assert_array_equal(apply_recipe(recipe, rgb), as_array)
    assert apply_recipe(recipe, []).shape == (0, 28, 28)
    assert apply_recipe(get_recipe("photo"), []).shape == (0, 224, 224, 3)
    colour = apply_recipe(get_recipe("photo", size=32), digits[:2])
    assert colour.shape == (2, 32, 32, 3) and (colour[..., 0] == colour[..., 2]).all()


def test_bad_pixel_data_is_refused_clearly():
    with pytest.raises(DataFormatError, match="expected uint8 pixels .* got float32"):
        apply_recipe(get_recipe("mnist"), np.zeros((1, 28, 28), np.float32))
    with pytest.raises(DataFormatError, match="image 1: expected uint8"):
        apply_recipe(get_recipe("mnist"), [np.zeros((5, 5), np.uint8), np.zeros((5, 5))])
    with pytest.raises(DataFormatError, match=r"expected \(n, h, w\[, c\]\)"):
        apply_recipe(get_recipe("mnist"), np.zeros((28, 28), np.uint8)[None, None])
