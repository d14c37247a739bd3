"""The default augmentation follows the data: the dataset's recipe picks the preset
(affine for drawings and digits, flips and padded crops for images of things), an
explicit preset or setting wins, and the choice and its reason reach the log, the
bundle and the saved configuration."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from imgclass.cli import main
from imgclass.data.preprocess import get_recipe
from imgclass.data.store import PreparedDataset
from imgclass.train.augment import augment_images, random_pad_crop
from imgclass.train.config import data_preset, resolve_config, settle_augment


@pytest.mark.parametrize(
    ("recipe", "preset"),
    [
        ("sketch", "affine"),
        ("mnist", "affine"),
        ("centroid", "affine"),
        ("none", "flip-crop"),
        ("photo", "flip-crop-color"),
        ("photo-clean", "flip-crop-color"),
    ],
)
def test_each_builtin_recipe_picks_its_preset(recipe, preset):
    assert data_preset(get_recipe(recipe)) == (preset, f"recipe {recipe}")


def test_a_custom_recipe_is_judged_by_its_steps_and_channels():
    drawing = {"name": "mine", "steps": [{"op": "crop_to_ink"}], "size": [28, 28], "channels": 1}
    assert data_preset(drawing)[0] == "affine"
    gray = {"name": "mine", "steps": [{"op": "to_gray"}], "size": [28, 28], "channels": 1}
    assert data_preset(gray)[0] == "flip-crop"
    assert data_preset(None) == ("none", "the dataset names no recipe")


def test_auto_default_resolves_from_the_recipe_and_explicit_choices_win():
    photo = get_recipe("photo")
    cfg = resolve_config("cnn-resnet", recipe=photo)
    assert (cfg.augment.preset, cfg.augment.reason) == ("flip-crop-color", "recipe photo")
    assert cfg.augment.hflip == 0.5 and cfg.augment.pad_crop == 0.125 and cfg.augment.rotation == 0
    sketch = resolve_config("transfer-efficientnet_lite0", recipe=get_recipe("sketch"))
    assert sketch.augment.preset == "affine" and sketch.augment.hflip == 0

    flag = resolve_config("cnn-resnet", recipe=photo, augment="affine")
    assert (flag.augment.preset, flag.augment.reason) == ("affine", "--augment")
    assert flag.augment.hflip == 0 and flag.augment.rotation == 15
    setting = resolve_config("cnn-resnet", sets=["augment=none"], recipe=photo)
    assert setting.augment.preset == "none" and not setting.augment.image_active
    # A setting on top of "auto" is kept, even one that switches the preset's value off.
    no_flip = resolve_config("cnn-resnet", sets=["augment.hflip=0"], recipe=photo)
    assert no_flip.augment.preset == "flip-crop-color"
    assert no_flip.augment.hflip == 0 and no_flip.augment.pad_crop == 0.125
    # Families whose own default is no augmentation (the seeds' recipe) keep it.
    small = resolve_config("cnn-small", recipe=photo)
    assert small.augment.preset == "none" and small.augment.reason == "the defaults of cnn-small"


def test_auto_left_unresolved_is_settled_at_training_time():
    cfg = resolve_config("cnn-resnet", sets=["augment.rotation=5"])
    assert cfg.augment.preset == "auto" and not cfg.augment.hflip
    settled = settle_augment(cfg.augment, get_recipe("none"))
    assert (settled.preset, settled.reason) == ("flip-crop", "recipe none")
    assert settled.hflip == 0.5 and settled.rotation == 5  # the explicit setting kept
    explicit = resolve_config("cnn-resnet", augment="photo").augment
    assert settle_augment(explicit, get_recipe("sketch")) is explicit


def test_padded_crop_moves_each_image_by_whole_pixels_within_the_padding():
    x = torch.rand(16, 3, 12, 10)
    out = random_pad_crop(x, torch.Generator().manual_seed(1), 0.25)  # 3 px and 2 px
    shifts = set()
    for a, b in zip(x, out, strict=True):
        found = [
            (dy, dx)
            for dy in range(-3, 4)
            for dx in range(-2, 3)
            if torch.equal(_shifted(a, dy, dx), b)
        ]
        assert len(found) == 1
        shifts.add(found[0])
    assert len(shifts) > 4  # the shifts differ from image to image
    same = augment_images(x, settle_augment(resolve_config("cnn-resnet").augment, None),
                          torch.Generator())  # fmt: skip
    assert torch.equal(same, x)  # no recipe, no augmentation


def _shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``img`` (C, H, W) moved by (dy, dx) whole pixels, zeros coming in."""
    c, h, w = img.shape
    out = torch.zeros_like(img)
    ys, yd = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
    xs, xd = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
    out[:, yd, xd] = img[:, ys, xs]
    return out


def test_train_logs_and_records_the_chosen_preset(tmp_path, digits_dir, capsys, caplog):
    out = tmp_path / "run"
    args = ["--data", str(digits_dir), "--out", str(out), "--epochs", "1", "--no-track"]
    sets = ["--set", "width=8", "--set", "num_threads=1", "--json"]
    with caplog.at_level(logging.INFO, logger="imgclass"):
        assert main(["-q", "train", "--model", "cnn-resnet", *args, *sets]) == 0
    json.loads(capsys.readouterr().out)
    assert "augmentation: affine (recipe mnist)" in caplog.text
    with PreparedDataset.open(digits_dir) as ds:
        assert ds.recipe["name"] == "mnist"
    model_json = json.loads((out / "bundle" / "model.json").read_text())
    assert model_json["config"]["augment"]["preset"] == "affine"
    assert model_json["config"]["augment"]["reason"] == "recipe mnist"
    again = resolve_config(file=out / "config.yaml")  # what --resume reads back
    assert (again.augment.preset, again.augment.reason) == ("affine", "recipe mnist")

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="imgclass"):
        assert main(["-q", "train", "--model", "cnn-resnet", *args, "--augment", "flip-crop",
                     *sets]) == 0  # fmt: skip
    capsys.readouterr()
    assert "augmentation: flip-crop (--augment)" in caplog.text
    model_json = json.loads((out / "bundle" / "model.json").read_text())
    assert model_json["config"]["augment"]["hflip"] == 0.5
