"""One decoded user image (an upload, a canvas export) -> what ``apply_recipe`` expects."""

from __future__ import annotations

from typing import Any

import numpy as np

from imgclass.data.preprocess._batch import gray_one, rgb_one
from imgclass.errors import DataFormatError


def _from_pil(image: Any) -> np.ndarray:
    """A PIL image as uint8 L, RGB or RGBA, upright (EXIF orientation applied)."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image) or image  # phone photos are stored sideways
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16- and 32-bit gray: PIL's convert("L") would clip, we keep the range.
        wide = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or wide.max() > 255 else 255.0
        return np.rint(wide.clip(0, top) * (255.0 / top)).astype(np.uint8)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        image = image.convert("RGBA")
    elif image.mode not in ("L", "RGB"):
        image = image.convert("RGB" if image.mode not in ("1",) else "L")
    return np.asarray(image)


def _from_array(arr: np.ndarray) -> np.ndarray:
    """uint8, bool and 16-bit arrays to uint8; anything else is refused."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    raise DataFormatError(
        "<image>", f"expected uint8 pixels (0..255), got {arr.dtype}; scale floats to 0..255"
    )


def prepare_raw_image(image: Any, recipe: dict[str, Any]) -> np.ndarray:
    """A single user image, as ``apply_recipe`` expects it for ``recipe``.

    image: a PIL image (any mode; EXIF orientation applied) or an array (h, w),
    (h, w, 1), (h, w, 3) RGB or (h, w, 4) RGBA, of any size and either polarity.
    Transparent areas count as white paper. Returns uint8 (h, w) for 1-channel recipes
    (polarity is left to the recipe's ``invert_auto``), (h, w, 3) RGB otherwise.
    """
    from PIL import Image

    arr = _from_pil(image) if isinstance(image, Image.Image) else _from_array(np.asarray(image))
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise DataFormatError(
            "<image>", f"expected (h, w), (h, w, 3) or (h, w, 4), got {arr.shape}"
        )
    if min(arr.shape[:2]) < 1:
        raise DataFormatError("<image>", f"the image is empty ({arr.shape[0]} x {arr.shape[1]})")
    return gray_one(arr) if recipe["channels"] == 1 else rgb_one(arr)
