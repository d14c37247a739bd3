"""Normalisation recipes: pure array functions, named and parameterised as data.

A recipe is a JSON-able dict ``{"name", "steps": [{"op": ..., **params}], "size":
[H, W], "channels": 1 | 3}`` stored in the dataset manifest and in every bundle, so
training, evaluation, the CLI's predict and the server all run the same steps
(docs/internals.md, "Preprocessing recipes"). Every op takes and returns a batch: a
uint8 array (n, h, w[, c]) or a list of such images of varying sizes. Drawing ops work
on ink = 255 on 0.

Modules: ``sketch`` (gray, inversion, MNIST-style size normalisation, centring),
``width`` (line-width standardisation), ``photo`` (resize and crop, CLAHE, NLM
denoising), ``recipes`` (the presets, validation, ``apply_recipe``), ``raw`` (decoded
user images).
"""

from __future__ import annotations

from imgclass.data.preprocess.photo import clahe, denoise, resize_crop, to_rgb
from imgclass.data.preprocess.raw import prepare_raw_image
from imgclass.data.preprocess.recipes import (
    OPS,
    RECIPES,
    apply_recipe,
    get_recipe,
    validate_recipe,
)
from imgclass.data.preprocess.sketch import (
    INK_THRESHOLD,
    center_of_mass,
    centroid,
    crop_to_ink,
    fit_box,
    fit_center,
    ink_boxes,
    invert_auto,
    mass_centers,
    resize,
    to_gray,
)
from imgclass.data.preprocess.width import line_width, skeletonize, stroke_widths

__all__ = [
    "INK_THRESHOLD",
    "OPS",
    "RECIPES",
    "apply_recipe",
    "center_of_mass",
    "centroid",
    "clahe",
    "crop_to_ink",
    "denoise",
    "fit_box",
    "fit_center",
    "get_recipe",
    "ink_boxes",
    "invert_auto",
    "line_width",
    "mass_centers",
    "prepare_raw_image",
    "resize",
    "resize_crop",
    "skeletonize",
    "stroke_widths",
    "to_gray",
    "to_rgb",
    "validate_recipe",
]
