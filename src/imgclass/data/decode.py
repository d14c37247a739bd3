"""Bytes a person sent (an upload, a canvas export, a stored feedback image) -> a
decoded PIL image, or ``BadInput`` saying why not: the one place that decides which
image bytes imgclass accepts, for the server and the feedback export alike."""

from __future__ import annotations

import io
import logging
import warnings
import zlib
from typing import Any

from imgclass.errors import BadInput

log = logging.getLogger(__name__)
NOT_AN_IMAGE = "this file is not an image we can read (PNG, JPEG, WebP, BMP or GIF)"
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "MPO")
DECODE_MIN_SIDE = 1024  # px; see Predictor.decode_side
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG chunks that leave the decoded samples as they are (Pillow and libpng agree on them)
PLAIN_CHUNKS = frozenset(
    (b"IHDR", b"IDAT", b"IEND", b"gAMA", b"cHRM", b"sRGB", b"pHYs", b"tEXt", b"tIME", b"bKGD")
)
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


def decode_pixels(data: bytes, max_pixels: int, min_side: int | None = None) -> Any:
    """``decode_image`` for a request's prediction: the same checks and the same pixels,
    but an 8-bit gray, RGB or RGBA PNG that needs no reduction comes back as a uint8 array
    (h, w[, 3|4]) decoded by OpenCV's libpng, a third faster than Pillow's decoder.

    PNG is lossless, so both decoders give the same samples; what Pillow would do beyond
    them keeps its path: palettes, transparency chunks and bit depths other than 8 (each
    turned into another mode), Adam7 interlacing, and EXIF (the orientation applies).
    """
    if not _plain_png(data) or not _small(data, max_pixels, min_side):
        return decode_image(data, max_pixels, min_side)  # its checks, reductions, errors
    import cv2
    import numpy as np

    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:  # corrupt data: Pillow's decoder says why
        return decode_image(data, max_pixels, min_side)
    if pixels.ndim == 3:
        code = cv2.COLOR_BGRA2RGBA if pixels.shape[2] == 4 else cv2.COLOR_BGR2RGB
        pixels = cv2.cvtColor(pixels, code)
    return pixels


def _small(data: bytes, max_pixels: int, min_side: int | None) -> bool:
    """Whether the header says the image is within ``max_pixels`` and needs no reduction."""
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return 0 < width * height <= max_pixels and _reduction((width, height), min_side) == 1


def _plain_png(data: bytes) -> bool:
    """A PNG with 8 bits per sample, gray (0), RGB (2) or RGBA (6), not interlaced, whose
    chunks are all whole (CRCs right, as Pillow checks them; libpng would only warn about
    an ancillary one) and of kinds that change no pixel: what ``decode_pixels`` hands to
    OpenCV. Anything else (tRNS, eXIf, APNG, ICC profiles, compressed text) is Pillow's."""
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return False
    depth, color, interlace = data[24], data[25], data[28]
    if depth != 8 or color not in (0, 2, 6) or interlace != 0:
        return False
    at = len(PNG_SIGNATURE)
    while at + 12 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        kind, end = data[at + 4 : at + 8], at + 8 + length
        if kind not in PLAIN_CHUNKS or end + 4 > len(data):
            return False
        if zlib.crc32(data[at + 4 : end]) != int.from_bytes(data[end : end + 4], "big"):
            return False
        if kind == b"IEND":
            return True
        at = end + 4
    return False


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
