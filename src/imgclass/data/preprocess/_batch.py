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
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2] + 0x8000) >> 16).astype(np.uint8)


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 (..., 4) RGBA -> uint8 (..., 3) RGB over a white background.

    Transparent pixels are paper: a canvas exported with a transparent background and
    black strokes becomes black on white, like a scan.
    """
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = rgba[..., :3].astype(np.uint16)
    # Integer arithmetic (max 65,152) keeps huge images from tripling into float64.
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def gray_one(img: np.ndarray) -> np.ndarray:
    """One image (h, w), (h, w, 1), (h, w, 3) or (h, w, 4) -> uint8 (h, w)."""
    if img.ndim == 2:
        return img
    if img.shape[2] == 1:
        return img[..., 0]
    if img.shape[2] == 4:
        img = composite_on_white(img)
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
