"""Recipes as data: named, parameterised lists of ops, validated and applied to batches.

A recipe is JSON-able: ``{"name": "mnist", "steps": [{"op": "invert_auto"}, ...],
"size": [H, W], "channels": 1 | 3}`` (plus an optional ``"doc"`` line). It is stored in
the prepared dataset's manifest and in every bundle's ``preprocess.json``, so prepare,
training, evaluation, ``imgclass predict`` and the server all run the same steps.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable
from typing import Any

import numpy as np

from imgclass.data.preprocess._batch import Images, resize_one
from imgclass.data.preprocess.photo import clahe, denoise, resize_crop, to_rgb
from imgclass.data.preprocess.sketch import (
    center_of_mass,
    centroid,
    crop_to_ink,
    fit_box,
    fit_center,
    invert_auto,
    resize,
    to_gray,
)
from imgclass.data.preprocess.width import line_width
from imgclass.errors import ConfigError, DataFormatError

OPS: dict[str, Callable[..., Images]] = {
    f.__name__: f
    for f in (
        to_gray,
        to_rgb,
        invert_auto,
        crop_to_ink,
        fit_box,
        center_of_mass,
        centroid,
        line_width,
        resize,
        resize_crop,
        clahe,
        denoise,
        fit_center,
    )
}
# Allowed range of each parameter, by name (a name means the same thing in every op).
RANGES: dict[str, tuple[float, float]] = {
    "size": (1, 4096),
    "box": (1, 4096),
    "resize_to": (1, 16384),
    "threshold": (0, 254),
    "width": (0.1, 256.0),
    "max_change": (0.0, 256.0),
    "thin_margin": (0.0, 256.0),
    "clip_limit": (0.01, 1000.0),
    "tile": (1, 256),
    "strength": (0.0, 100.0),
    "template": (1, 63),
    "search": (1, 255),
}
# Parameters renamed since recipes were first saved: (op, old name) -> new name.
RENAMED = {("line_width", "target"): "width"}
RECIPE_KEYS = {"name", "steps", "size", "channels", "doc"}


def _param_types(fn: Callable[..., Any]) -> dict[str, tuple[type, ...]]:
    """The keyword parameters of an op and the Python types each accepts."""
    hints = typing.get_type_hints(fn)
    params = list(inspect.signature(fn).parameters)[1:]  # the first one is the batch
    out = {}
    for name in params:
        hint = hints[name]
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        out[name] = tuple(type(None) if a is type(None) else a for a in allowed)
    return out


PARAMS = {name: _param_types(fn) for name, fn in OPS.items()}


def _recipe(
    name: str, steps: list[dict[str, Any]], size: int, channels: int, doc: str
) -> dict[str, Any]:
    return {"name": name, "steps": steps, "size": [size, size], "channels": channels, "doc": doc}


RECIPES: dict[str, dict[str, Any]] = {
    "none": _recipe(
        "none",
        [{"op": "to_gray"}, {"op": "resize", "size": 28}],
        28,
        1,
        "as stored: grayscale, resized to 28x28 if needed",
    ),
    "mnist": _recipe(
        "mnist",
        [
            {"op": "invert_auto"},
            # 8, not 0: specks of JPEG noise must not stretch the box (see sketch.py).
            {"op": "crop_to_ink", "threshold": 8},
            {"op": "fit_box", "box": 20},
            {"op": "center_of_mass", "size": 28},
        ],
        28,
        1,
        "MNIST's: crop to the ink, fit 20x20 keeping the aspect, centre of mass in 28x28",
    ),
    "centroid": _recipe(
        "centroid",
        [
            {"op": "invert_auto"},
            {"op": "resize", "size": 28, "keep_aspect": True},
            {"op": "centroid"},
        ],
        28,
        1,
        "ink on black, 28x28, centre of mass moved to the middle, no other scaling",
    ),
    "sketch": _recipe(
        "sketch",
        [
            {"op": "invert_auto"},
            {"op": "crop_to_ink"},
            {"op": "fit_box", "box": 24},
            {"op": "center_of_mass", "size": 28},
            # Last: the width is in final pixels, and the canvas leaves room to thicken.
            {"op": "line_width", "width": 1.4},
        ],
        28,
        1,
        "drawings: ink on black, longer side 24 px, centre of mass in 28x28, 1.4 px lines",
    ),
    "photo": _recipe(
        "photo",
        [{"op": "to_rgb"}, {"op": "resize_crop", "size": 224}],
        224,
        3,
        "photos for pretrained backbones: RGB, shorter side 256, centre crop 224x224",
    ),
    "photo-clean": _recipe(
        "photo-clean",
        [
            {"op": "to_rgb"},
            {"op": "resize_crop", "size": 224},
            {"op": "denoise", "strength": 7.0},
            {"op": "clahe", "clip_limit": 2.0, "tile": 8},
        ],
        224,
        3,
        "photo plus the original projects' clean-up: non-local means, then CLAHE (slow)",
    ),
}


def _where(recipe: dict[str, Any], index: int | None = None, op: object = None) -> str:
    name = recipe.get("name", "<unnamed>")
    return f"recipe {name!r}" + (f", step {index} ({op})" if index is not None else "")


def _check_value(recipe: dict[str, Any], index: int, op: str, name: str, value: Any) -> None:
    """Raise ConfigError unless ``value`` has a type and range that ``op`` accepts."""
    allowed = PARAMS[op][name]
    numeric = float in allowed and isinstance(value, int)  # 2 is a fine float
    if isinstance(value, bool) != (bool in allowed) or not (isinstance(value, allowed) or numeric):
        kinds = " or ".join("null" if a is type(None) else a.__name__ for a in allowed)
        raise ConfigError(f"{_where(recipe, index, op)}: {name} must be {kinds}, got {value!r}")
    low, high = RANGES.get(name, (-math.inf, math.inf))
    if value is not None and not isinstance(value, bool) and not low <= value <= high:
        raise ConfigError(
            f"{_where(recipe, index, op)}: {name} must be between {low:g} and {high:g}, "
            f"got {value!r}"
        )


def _compile_step(recipe: dict[str, Any], index: int, step: Any) -> tuple[str, dict[str, Any]]:
    """(op, params) of one step, with renamed parameters brought up to date."""
    op = step.get("op") if isinstance(step, dict) else None
    if not isinstance(op, str) or op not in OPS:
        raise ConfigError(
            f"{_where(recipe, index, op)}: unknown op {op!r}; known ops: {', '.join(OPS)}"
        )
    params = {RENAMED.get((op, k), k): v for k, v in step.items() if k != "op"}
    for name, value in params.items():
        if name not in PARAMS[op]:
            takes = ", ".join(PARAMS[op]) or "no parameters"
            raise ConfigError(
                f"{_where(recipe, index, op)}: unknown parameter {name!r} ({op} takes {takes})"
            )
        _check_value(recipe, index, op, name, value)
    return op, params


def _check_shape(recipe: dict[str, Any]) -> tuple[int, int]:
    size = recipe["size"]
    if isinstance(size, int) and not isinstance(size, bool):
        size = [size, size]
    ok = isinstance(size, list | tuple) and len(size) == 2
    if not ok or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size):
        raise ConfigError(f"{_where(recipe)}: size must be [height, width] in pixels, got {size!r}")
    if recipe["channels"] not in (1, 3) or isinstance(recipe["channels"], bool):
        raise ConfigError(f"{_where(recipe)}: channels must be 1 or 3, got {recipe['channels']!r}")
    return int(size[0]), int(size[1])


def validate_recipe(recipe: Any) -> dict[str, Any]:
    """A checked, normalised copy of a recipe (size as [H, W], renamed parameters
    updated). Raises ConfigError naming the recipe, the step and the field at fault."""
    if not isinstance(recipe, dict):
        raise ConfigError(f"a recipe must be a JSON object, got {type(recipe).__name__}")
    missing = [k for k in ("name", "steps", "size", "channels") if k not in recipe]
    unknown = sorted(set(recipe) - RECIPE_KEYS)
    if missing or unknown:
        what = f"has no {', '.join(missing)}" if missing else f"has unknown key(s) {unknown}"
        raise ConfigError(f"{_where(recipe)} {what}; a recipe has {', '.join(sorted(RECIPE_KEYS))}")
    if not isinstance(recipe["name"], str) or not isinstance(recipe["steps"], list):
        raise ConfigError(f"{_where(recipe)}: name must be a string and steps a list")
    h, w = _check_shape(recipe)
    steps = [_compile_step(recipe, i, step) for i, step in enumerate(recipe["steps"])]
    out = {
        "name": recipe["name"],
        "steps": [{"op": op, **params} for op, params in steps],
        "size": [h, w],
        "channels": recipe["channels"],
    }
    if "doc" in recipe:
        out["doc"] = str(recipe["doc"])
    return out  # new dicts and lists throughout, holding only checked scalars


def get_recipe(name_or_dict: str | dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A validated copy of a named preset (or of a recipe dict), with overrides.

    ``size`` (px) rescales every parameter given in pixels (``SIZE_LIKE``) in
    proportion; any other override sets that parameter in every step
    whose op takes it, e.g. ``get_recipe("sketch", width=2.0)``.
    """
    if isinstance(name_or_dict, str):
        if name_or_dict not in RECIPES:
            raise ConfigError(
                f"unknown recipe {name_or_dict!r}; choose one of {', '.join(RECIPES)}"
            )
        name_or_dict = RECIPES[name_or_dict]
    recipe = validate_recipe(name_or_dict)
    if "size" in overrides:
        recipe = _rescaled(recipe, overrides.pop("size"))
    for name, value in overrides.items():
        _override(recipe, name, value)
    return validate_recipe(recipe)


# Parameters in pixels, scaled with the output size.
SIZE_LIKE = ("size", "box", "width", "max_change", "thin_margin", "resize_to")


def _rescaled(recipe: dict[str, Any], size: Any) -> dict[str, Any]:
    """The recipe for a ``size`` x ``size`` output, every size-like parameter scaled."""
    if isinstance(size, list | tuple) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 4096:
        raise ConfigError(
            f"{_where(recipe)}: size must be a whole number from 8 to 4096, got {size!r}"
        )
    scale = size / recipe["size"][0]
    if scale == 1:
        return recipe
    for step in recipe["steps"]:
        signature = inspect.signature(OPS[step["op"]]).parameters
        for name in SIZE_LIKE:
            if name not in signature:
                continue
            value = step.get(name, signature[name].default)
            if value is None:
                continue
            scaled = value * scale
            step[name] = round(scaled, 3) if isinstance(value, float) else max(1, round(scaled))
    recipe["size"] = [size, round(recipe["size"][1] * scale)]
    if "doc" in recipe:
        recipe["doc"] += f" (rescaled to {size}x{size})"
    return recipe


def _override(recipe: dict[str, Any], name: str, value: Any) -> None:
    targets = [step for step in recipe["steps"] if name in PARAMS[step["op"]]]
    if not targets:
        known = sorted({p for step in recipe["steps"] for p in PARAMS[step["op"]]})
        raise ConfigError(
            f"{_where(recipe)}: no step takes {name!r}; its parameters: {', '.join(known) or 'none'}"
        )
    for step in targets:
        step[name] = value


def _as_batch(images: Images) -> Images:
    """Check the input batch's dtype and dimensions (clear errors, no silent rescaling)."""
    arrays = [images] if isinstance(images, np.ndarray) else images
    for i, arr in enumerate(arrays):
        arr = np.asarray(arr)
        if arr.dtype == np.uint8:
            continue
        where = "images" if isinstance(images, np.ndarray) else f"image {i}"
        raise DataFormatError(
            "<images>",
            f"expected uint8 pixels (0..255), got {arr.dtype}; scale [0, 1] floats by 255 first",
            where=where,
        )
    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4) or not _channels_ok(images[0]):
            raise DataFormatError(
                "<images>", f"expected (n, h, w[, c]) with c = 1, 3 or 4, got {images.shape}"
            )
        return images
    out = [np.asarray(img) for img in images]
    for i, img in enumerate(out):
        if img.ndim not in (2, 3) or min(img.shape[:2]) < 1 or not _channels_ok(img):
            raise DataFormatError(
                "<images>",
                f"expected (h, w[, c]) with c = 1, 3 or 4, got {img.shape}",
                f"image {i}",
            )
    return out


def _channels_ok(img: np.ndarray) -> bool:
    return img.ndim == 2 or img.shape[2] in (1, 3, 4)


def apply_recipe(recipe: dict[str, Any], images: Images, *, checked: bool = False) -> np.ndarray:
    """Run a recipe on a batch, the one code path of prepare, training and serving.

    images: uint8 (n, h, w[, c]) or a list of n uint8 images of any sizes, either
    polarity. Returns uint8 (n, H, W) for 1-channel recipes, (n, H, W, 3) otherwise.
    checked: ``recipe`` is already ``validate_recipe``'s output (a loaded bundle's, checked
    once), so it is not checked again for every request.
    """
    checked_recipe = recipe if checked else validate_recipe(recipe)
    h, w = checked_recipe["size"]
    channels = checked_recipe["channels"]
    if len(images) == 0:
        return np.zeros((0, h, w) if channels == 1 else (0, h, w, 3), dtype=np.uint8)
    batch = _as_batch(images)
    for step in checked_recipe["steps"]:
        params = {k: v for k, v in step.items() if k != "op"}
        batch = OPS[step["op"]](batch, **params)
    batch = to_gray(batch) if channels == 1 else to_rgb(batch)
    if isinstance(batch, np.ndarray) and batch.shape[1:3] == (h, w):
        return np.ascontiguousarray(batch)
    return np.stack([resize_one(img, h, w) for img in batch])
