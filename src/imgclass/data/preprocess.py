"""Normalisation recipes: pure array functions, named and parameterised as data.

A recipe is a JSON-able dict ``{"name", "steps": [{"op": ..., **params}], "size":
[H, W], "channels": 1 | 3}`` stored in the dataset manifest and in every bundle, so
training, evaluation, the CLI's predict and the server all run the same steps.
Every op takes and returns a batch: a uint8 array (n, h, w[, 3]) or a list of such
images of varying sizes. Sketch ops work on ink = 255 on 0.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from imgclass.errors import ConfigError

Images = np.ndarray | Sequence[np.ndarray]
INK_THRESHOLD = 16  # grey levels above this count as ink when cropping


# --- sketch and digit ops -------------------------------------------------------------


def to_gray(images: Images) -> Images:
    """RGB(A) -> luminance (ITU-R 601 weights, as PIL's "L"); gray images pass through."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        return images  # already a gray batch
    out = []
    for img in images:
        if img.ndim == 3:
            rgb = img[..., :3].astype(np.float32)
            img = np.rint(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))
            img = img.clip(0, 255).astype(np.uint8)
        out.append(img)
    return out


def is_dark_on_light(img: np.ndarray) -> bool:
    """True when the background (the border pixels' median) is light: black ink on white."""
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    return float(np.median(border)) > 127.0


def invert_auto(images: Images) -> list[np.ndarray]:
    """Bring every image to ink = 255 on 0, whichever polarity it came in."""
    return [255 - img if is_dark_on_light(img) else img for img in to_gray(images)]


def ink_box(img: np.ndarray, threshold: int = INK_THRESHOLD) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right), exclusive ends, of the pixels above ``threshold``."""
    rows = np.flatnonzero((img > threshold).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero((img > threshold).any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def center_of_mass(img: np.ndarray) -> tuple[float, float]:
    """(row, col) centre of mass of the intensities; the middle for a blank image."""
    total = float(img.sum())
    if total == 0:
        return (img.shape[0] - 1) / 2.0, (img.shape[1] - 1) / 2.0
    rows = np.arange(img.shape[0], dtype=np.float64)
    cols = np.arange(img.shape[1], dtype=np.float64)
    weights = img.astype(np.float64)
    return float(rows @ weights.sum(axis=1) / total), float(cols @ weights.sum(axis=0) / total)


def _resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    shrinking = height < img.shape[0] or width < img.shape[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(img, (width, height), interpolation=interp)


def _place_by_mass(img: np.ndarray, size: int) -> np.ndarray:
    """Paste ``img`` into a size x size canvas so that its centre of mass is in the middle."""
    canvas = np.zeros((size, size), dtype=np.uint8)
    r, c = center_of_mass(img)
    mid = size / 2.0  # MNIST's convention: real digits have their centre of mass at (14, 14)
    top, left = int(round(mid - r)), int(round(mid - c))
    h, w = img.shape
    # Clip the paste to the canvas (a lopsided drawing may be pushed over an edge).
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(size, top + h), min(size, left + w)
    if y1 > y0 and x1 > x0:
        canvas[y0:y1, x0:x1] = img[y0 - top : y1 - top, x0 - left : x1 - left]
    return canvas


def fit_center(
    images: Images, box: int = 20, size: int = 28, threshold: int = INK_THRESHOLD
) -> np.ndarray:
    """MNIST's normalisation: crop to the ink, fit into ``box`` x ``box`` keeping the
    aspect ratio (anti-aliased), centre by the centre of mass in ``size`` x ``size``."""
    out = np.zeros((len(images), size, size), dtype=np.uint8)
    for i, img in enumerate(images):
        bbox = ink_box(img, threshold)
        if bbox is None:
            continue
        crop = img[bbox[0] : bbox[1], bbox[2] : bbox[3]]
        h, w = crop.shape
        factor = box / max(h, w)
        fitted = _resize(crop, max(1, round(h * factor)), max(1, round(w * factor)))
        out[i] = _place_by_mass(fitted, size)
    return out


def centroid(images: Images, size: int | None = None) -> np.ndarray:
    """Shift each image (whole pixels) so that its centre of mass is in the middle."""
    out = []
    for img in images:
        side = size or img.shape[0]
        padded = np.zeros((side, side), dtype=np.uint8)
        h, w = min(side, img.shape[0]), min(side, img.shape[1])
        padded[:h, :w] = img[:h, :w]
        out.append(_place_by_mass(padded, side))
    return np.stack(out) if out else np.zeros((0, size or 28, size or 28), np.uint8)


def stroke_width(img: np.ndarray, threshold: int = 127) -> float:
    """Estimated line width in pixels: 2 * ink area / ink perimeter (a line of length L
    and width w has area L*w and perimeter about 2L)."""
    mask = img > threshold
    area = int(mask.sum())
    if area == 0:
        return 0.0
    padded = np.pad(mask, 1)
    perimeter = int((padded[1:] != padded[:-1]).sum() + (padded[:, 1:] != padded[:, :-1]).sum())
    return 2.0 * area / max(perimeter, 1)


def line_width(images: Images, target: float = 2.0) -> list[np.ndarray]:
    """Thicken thin-line drawings towards ``target`` px (grey dilation, one pixel at a time),
    so 1-px renderings and Google's thick bitmaps look alike. Never thins."""
    import cv2

    kernel = np.ones((2, 2), np.uint8)
    out = []
    for img in images:
        for _ in range(4):
            width = stroke_width(img)
            if width == 0.0 or width >= target - 0.5:
                break
            img = cv2.dilate(img, kernel)
        out.append(img)
    return out


def resize(images: Images, size: int = 28) -> np.ndarray:
    """Resize every image to size x size (area interpolation when shrinking)."""
    if isinstance(images, np.ndarray) and images.shape[1:3] == (size, size):
        return images
    return np.stack([_resize(img, size, size) for img in images])


# --- photo ops ------------------------------------------------------------------------


def to_rgb(images: Images) -> Images:
    """Gray -> RGB by repetition; RGBA -> RGB composited on white."""
    if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[3] == 3:
        return images
    out = []
    for img in images:
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        elif img.shape[2] == 4:
            alpha = img[..., 3:4].astype(np.float32) / 255.0
            img = np.rint(img[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
        out.append(img)
    return out


def resize_crop(images: Images, size: int = 224, resize_to: int | None = None) -> np.ndarray:
    """Resize the shorter side to ``resize_to`` (default size * 8/7, as ImageNet models
    expect) and centre-crop to size x size."""
    shorter = resize_to or round(size * 8 / 7)
    out = []
    for img in to_rgb(images):
        h, w = img.shape[:2]
        factor = shorter / min(h, w)
        nh, nw = max(size, round(h * factor)), max(size, round(w * factor))
        big = _resize(img, nh, nw)
        top, left = (nh - size) // 2, (nw - size) // 2
        out.append(big[top : top + size, left : left + size])
    return np.stack(out)


def clahe(images: Images, clip_limit: float = 2.0, tile: int = 8) -> list[np.ndarray]:
    """Contrast-limited adaptive histogram equalisation (on L of LAB for colour images)."""
    import cv2

    eq = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile, tile))
    out = []
    for img in images:
        if img.ndim == 2:
            out.append(eq.apply(img))
            continue
        lab = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2LAB)
        lab[..., 0] = eq.apply(lab[..., 0])
        out.append(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB))
    return out


def denoise(images: Images, strength: float = 7.0) -> list[np.ndarray]:
    """Non-local-means denoising (OpenCV). Slow (~100 ms per photo) and it smooths fur
    texture away: off by default for pretrained backbones (see DESIGN.md)."""
    import cv2

    out = []
    for img in images:
        img = np.ascontiguousarray(img)
        if img.ndim == 2:
            out.append(cv2.fastNlMeansDenoising(img, None, strength, 7, 21))
        else:
            out.append(cv2.fastNlMeansDenoisingColored(img, None, strength, strength, 7, 21))
    return out


# --- recipes as data ------------------------------------------------------------------

OPS: dict[str, Callable[..., Any]] = {
    "to_gray": to_gray,
    "to_rgb": to_rgb,
    "invert_auto": invert_auto,
    "fit_center": fit_center,
    "centroid": centroid,
    "line_width": line_width,
    "resize": resize,
    "resize_crop": resize_crop,
    "clahe": clahe,
    "denoise": denoise,
}
OP_PARAMS: dict[str, set[str]] = {
    "to_gray": set(),
    "to_rgb": set(),
    "invert_auto": set(),
    "fit_center": {"box", "size", "threshold"},
    "centroid": {"size"},
    "line_width": {"target"},
    "resize": {"size"},
    "resize_crop": {"size", "resize_to"},
    "clahe": {"clip_limit", "tile"},
    "denoise": {"strength"},
}


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
        "as stored: grayscale 28x28",
    ),
    "mnist": _recipe(
        "mnist",
        [{"op": "invert_auto"}, {"op": "fit_center", "box": 20, "size": 28}],
        28,
        1,
        "MNIST: crop to the ink, fit 20x20 keeping the aspect, centre of mass in 28x28",
    ),
    "centroid": _recipe(
        "centroid",
        [{"op": "invert_auto"}, {"op": "resize", "size": 28}, {"op": "centroid", "size": 28}],
        28,
        1,
        "shift the centre of mass to the middle, no scaling",
    ),
    "sketch": _recipe(
        "sketch",
        [
            {"op": "invert_auto"},
            {"op": "line_width", "target": 2.0},
            {"op": "fit_center", "box": 24, "size": 28},
        ],
        28,
        1,
        "drawings: ink on black, standard line width, longer side 24 px, centre of mass",
    ),
    "photo": _recipe(
        "photo",
        [{"op": "resize_crop", "size": 224}],
        224,
        3,
        "photos for pretrained backbones: shorter side 256, centre crop 224",
    ),
    "photo-clean": _recipe(
        "photo-clean",
        [{"op": "resize_crop", "size": 224}, {"op": "clahe"}, {"op": "denoise"}],
        224,
        3,
        "the original projects' clean-up: CLAHE then non-local-means (slow)",
    ),
}


def get_recipe(name_or_dict: str | dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A validated copy of a named recipe (or a recipe dict), with top-level overrides.

    ``size`` overrides the output size of every sizing step.
    """
    if isinstance(name_or_dict, str):
        if name_or_dict not in RECIPES:
            raise ConfigError(
                f"unknown recipe {name_or_dict!r}; choose one of {', '.join(RECIPES)}"
            )
        recipe = copy.deepcopy(RECIPES[name_or_dict])
    else:
        recipe = copy.deepcopy(name_or_dict)
    size = overrides.pop("size", None)
    if overrides:
        raise ConfigError(f"unknown recipe override(s): {', '.join(overrides)}")
    if size is not None:
        recipe = _with_size(recipe, int(size))
    validate_recipe(recipe)
    return recipe


def _with_size(recipe: dict[str, Any], size: int) -> dict[str, Any]:
    if size < 8 or size > 1024:
        raise ConfigError(f"recipe size must be between 8 and 1024, got {size}")
    old = recipe["size"][0]
    for step in recipe["steps"]:
        if "size" in step:
            step["size"] = size
        if step["op"] == "fit_center" and "box" in step:
            step["box"] = max(1, round(step["box"] * size / old))
        if step["op"] == "resize_crop":
            step.pop("resize_to", None)
    recipe["size"] = [size, size]
    return recipe


def validate_recipe(recipe: dict[str, Any]) -> None:
    """Raise ConfigError naming the first unknown op or parameter."""
    for key in ("name", "steps", "size", "channels"):
        if key not in recipe:
            raise ConfigError(f"recipe has no {key!r}")
    if recipe["channels"] not in (1, 3):
        raise ConfigError(f"recipe channels must be 1 or 3, got {recipe['channels']}")
    for i, step in enumerate(recipe["steps"]):
        op = step.get("op") if isinstance(step, dict) else None
        if op not in OPS:
            raise ConfigError(
                f"recipe {recipe['name']!r} step {i}: unknown op {op!r}; ops: {', '.join(OPS)}"
            )
        unknown = set(step) - {"op"} - OP_PARAMS[op]
        if unknown:
            raise ConfigError(
                f"recipe {recipe['name']!r} step {i} ({op}): unknown parameter(s) {sorted(unknown)}"
            )
    json.dumps(recipe)  # must stay JSON-able


def apply_recipe(recipe: dict[str, Any], images: Images) -> np.ndarray:
    """Run the recipe's steps on a batch; uint8 (n, H, W) or (n, H, W, 3)."""
    h, w = recipe["size"]
    channels = recipe["channels"]
    if len(images) == 0:
        shape = (0, h, w) if channels == 1 else (0, h, w, 3)
        return np.zeros(shape, dtype=np.uint8)
    batch: Any = images
    for step in recipe["steps"]:
        params = {k: v for k, v in step.items() if k != "op"}
        batch = OPS[step["op"]](batch, **params)
    batch = to_gray(batch) if channels == 1 else to_rgb(batch)
    out = batch if isinstance(batch, np.ndarray) else np.stack(batch)
    out = out.astype(np.uint8, copy=False)
    if out.shape[1:3] != (h, w):
        out = np.stack([_resize(img, h, w) for img in out])
    return out


def prepare_raw_image(image: Any, recipe: dict[str, Any]) -> np.ndarray:
    """One decoded user image (PIL Image or array; L, RGB or RGBA; any size) -> the uint8
    array that ``apply_recipe`` expects: gray for 1-channel recipes (transparent areas
    count as white paper), RGB for photo recipes."""
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA") or (
            image.mode == "P" and "transparency" in image.info
        ):
            image = image.convert("RGBA")
        elif image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        image = np.asarray(image)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = to_rgb([arr])[0]
    if recipe["channels"] == 1:
        return to_gray([arr])[0]
    return to_rgb([arr])[0]
