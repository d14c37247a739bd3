"""Bytes a person sent (an upload, a canvas export, a stored feedback image) -> a
decoded PIL image, or ``BadInput`` saying why not: the one place that decides which
image bytes imgclass accepts, for the server and the feedback export alike."""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any

from imgclass.errors import BadInput

log = logging.getLogger(__name__)
NOT_AN_IMAGE = "this file is not an image we can read (PNG, JPEG, WebP, BMP or GIF)"
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "MPO")
DECODE_MIN_SIDE = 1024  # px; see Predictor.decode_side
# Modes Image.reduce cannot handle: palette and 1-bit images are converted first; 16-bit
# gray is left whole (rare, and its range is mapped later by prepare_raw_image).
UNREDUCIBLE = ("P", "1")


def decode_image(data: bytes, max_pixels: int, min_side: int | None = None) -> Any:
    """Bytes of a PNG/JPEG/WebP/BMP/GIF (first frame) -> PIL image; BadInput otherwise.

    The size is checked from the header, before any pixel is decoded: more than
    ``max_pixels`` decoded pixels is refused (413). With ``min_side``, a large image is
    reduced by a whole factor while its shorter side stays at least ``min_side``: a JPEG
    is decoded at 1/2, 1/4 or 1/8 scale in the DCT (draft mode; its pixel count is
    checked at that scale), anything else is box-averaged (``Image.reduce``) right after
    decoding, so the recipe never runs on 25 million pixels to make a 28 x 28 input.
    An image whose shorter side is under ``2 * min_side`` is returned exactly as decoded.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadInput("the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in FORMATS:
                raise BadInput(
                    f"unsupported image format {img.format}; send PNG, JPEG, WebP, BMP or GIF", 415
                )
            factor = _reduction(img.size, min_side)
            if factor > 1 and img.format in ("JPEG", "MPO"):
                img.draft(img.mode, (img.width // factor, img.height // factor))
                factor = _reduction(img.size, min_side)  # what the DCT scaling left to do
            _check_pixels(img, max_pixels)
            img.seek(0)
            img.load()
            return _reduce(img, factor) if factor > 1 else img
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
        # the reason stays in the log, not in the answer: "UnidentifiedImageError" means
        # nothing to the person who sent a file
        log.info("undecodable image: %s: %s", type(exc).__name__, exc)
        raise BadInput(NOT_AN_IMAGE, 415) from None


def _reduction(size: tuple[int, int], min_side: int | None) -> int:
    """The whole factor that keeps the shorter side at least ``min_side`` (1: none)."""
    return max(1, min(size) // min_side) if min_side else 1


def _check_pixels(img: Any, max_pixels: int) -> None:
    if img.width * img.height > max_pixels:
        raise BadInput(
            f"the image is {img.width}x{img.height} once decoded; at most {max_pixels} pixels "
            "(IMGCLASS_MAX_IMAGE_PIXELS)",
            413,
        )


def _reduce(img: Any, factor: int) -> Any:
    """``img`` box-averaged by ``factor`` (EXIF and other info kept for orientation)."""
    if img.mode.startswith("I;16"):
        return img
    if img.mode in UNREDUCIBLE:
        transparent = "transparency" in img.info
        img = img.convert("RGBA" if transparent else "L" if img.mode == "1" else "RGB")
    info = dict(img.info)
    out = img.reduce(factor)
    out.info.update(info)
    return out
