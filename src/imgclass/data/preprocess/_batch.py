"""Batch plumbing shared by the ops: what a batch is, and the pixel conversions.

A batch is either a uint8 array of shape (n, h, w) (gray) or (n, h, w, c) (colour),
or a sequence of n uint8 arrays of varying sizes (decoded photos, crops). Ops keep
arrays as arrays where the shapes allow it, because vectorised numpy is what makes
millions of 28 x 28 bitmaps affordable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Images = np.ndarray | Sequence[np.ndarray]

# PIL's fixed-point ITU-R 601 luma weights (Convert.c, L24): 0.299, 0.587, 0.114 * 2**16.
_LUMA = (19595, 38470, 7471)


def stack_if_uniform(images: Images) -> Images:
    """An (n, ...) array when every image has the same shape, else the list unchanged."""
    if isinstance(images, np.ndarray):
        return images
    if images and all(img.shape == images[0].shape for img in images):
        return np.stack(images)
    return list(images)


def luma(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) RGB -> uint8 (...) gray, bit-identical to PIL's ``convert("L")``."""
    return _luma_planes(*_planes(rgb))


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 (..., 4) RGBA -> uint8 (..., 3) RGB over a white background.

    Transparent pixels are paper: a canvas exported with a transparent background and
    black strokes becomes black on white, like a scan.
    """
    return np.stack([p.astype(np.uint8) for p in _composited_planes(rgba)], axis=-1)


def luma_on_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 (..., 4) RGBA -> uint8 (...) gray: ``luma(composite_on_white(rgba))`` in one
    pass over the planes (a 280 x 280 canvas in about a fifth of the time)."""
    return _luma_planes(*_composited_planes(rgba))


def _planes(pixels: np.ndarray) -> list[np.ndarray]:
    """The channel planes of uint8 (..., c) pixels, each contiguous (...,): numpy's
    loops over a last axis of 3 or 4 are slow, OpenCV's split is one pass."""
    import cv2

    shape, channels = pixels.shape[:-1], pixels.shape[-1]
    if not pixels.size:
        return [pixels[..., c] for c in range(channels)]
    image = np.ascontiguousarray(pixels).reshape(-1, shape[-1] if shape else 1, channels)
    return [plane.reshape(shape) for plane in cv2.split(image)]


def _composited_planes(rgba: np.ndarray) -> list[np.ndarray]:
    """R, G and B over white, uint16 planes (...,) holding 0..255: each
    (c * alpha + 255 * (255 - alpha) + 127) // 255, the division by 255 done exactly as
    (t + 1 + (t >> 8)) >> 8, which holds for every t below 65535 (here t <= 65152)."""
    *colour, alpha8 = _planes(rgba)
    alpha = alpha8.astype(np.uint16)
    base = np.uint16(255 * 255 + 127) - np.uint16(255) * alpha
    out = []
    for plane in colour:
        t = plane * alpha
        t += base
        t += (t >> 8) + np.uint16(1)
        t >>= 8
        out.append(t)
    return out


def _luma_planes(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PIL's fixed-point luma of three planes (uint8 or uint16 holding 0..255)."""
    y = r.astype(np.uint32) * _LUMA[0]
    y += g.astype(np.uint32) * _LUMA[1]
    y += b.astype(np.uint32) * _LUMA[2]
    y += 0x8000
    y >>= 16
    return y.astype(np.uint8)


def gray_one(img: np.ndarray) -> np.ndarray:
    """One image (h, w), (h, w, 1), (h, w, 3) or (h, w, 4) -> uint8 (h, w)."""
    if img.ndim == 2:
        return img
    if img.shape[2] == 1:
        return img[..., 0]
    if img.shape[2] == 4:
        return luma_on_white(img)
    return luma(img)


def rgb_one(img: np.ndarray) -> np.ndarray:
    """One image (h, w), (h, w, 1), (h, w, 3) or (h, w, 4) -> uint8 (h, w, 3)."""
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.shape[2] == 4:
        return composite_on_white(img)
    return img


def resize_one(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Anti-aliased resize: area averaging when shrinking, bilinear when enlarging.

    Area averaging is what a box-filter downscale of a finer drawing gives, and what
    MNIST's anti-aliased size normalisation and Google's downscaled renderings look like.
    """
    if img.shape[:2] == (height, width):
        return img
    import cv2

    shrinking = height < img.shape[0] or width < img.shape[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(img), (width, height), interpolation=interp)
