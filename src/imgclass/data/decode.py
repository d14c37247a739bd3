"""Bytes a person sent (an upload, a canvas export, a stored feedback image) -> a
decoded PIL image, or ``BadInput`` saying why not: the one place that decides which
image bytes imgclass accepts, for the server and the feedback export alike."""

from __future__ import annotations

import io
import warnings
from typing import Any

from imgclass.errors import BadInput


def decode_image(data: bytes, max_pixels: int) -> Any:
    """Bytes of a PNG/JPEG/WebP/BMP/GIF (first frame) -> PIL image; BadInput otherwise."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadInput("the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in ("PNG", "JPEG", "WEBP", "BMP", "GIF", "MPO"):
                raise BadInput(
                    f"unsupported image format {img.format}; send PNG, JPEG, WebP, BMP or GIF", 415
                )
            if img.width * img.height > max_pixels:
                raise BadInput(
                    f"the image is {img.width}x{img.height}; at most {max_pixels} pixels", 413
                )
            img.seek(0)
            img.load()
            return img
    except BadInput:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as exc:
        raise BadInput(f"cannot decode the image ({exc.__class__.__name__})", 415) from None
