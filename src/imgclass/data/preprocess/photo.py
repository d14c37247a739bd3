"""Ops for photos: RGB, resize and centre crop, and the original projects' clean-up.

DESIGN.md measured the clean-up on dog breeds: non-local-means denoising smooths fur
texture away (17-27 points lost, ~120 ms a full-size photo) and CLAHE was neutral to
slightly harmful with a pretrained backbone, so the ``photo`` recipe leaves both out
and ``photo-clean`` keeps them for whoever measures otherwise.
"""

from __future__ import annotations

import numpy as np

from imgclass.data.preprocess._batch import Images, resize_one, rgb_one


def to_rgb(images: Images) -> Images:
    """Gray -> RGB by repetition, RGBA -> RGB composited on white; RGB passes through.

    images: uint8 (n, h, w[, c]) or a list. Returns (n, h, w, 3) or a list.
    """
    if isinstance(images, np.ndarray):
        if images.ndim == 4 and images.shape[3] == 3:
            return images
        return np.stack([rgb_one(img) for img in images]) if len(images) else images
    return [rgb_one(img) for img in images]


def resize_crop(images: Images, size: int = 224, resize_to: int | None = None) -> np.ndarray:
    """Resize each image so that its shorter side is ``resize_to`` px (default
    ``size * 8 / 7``, 256 for 224, as ImageNet models were evaluated), then cut the
    central ``size`` x ``size`` square.

    images: uint8 (n, h, w[, c]) or a list of varying sizes. Returns uint8
    (n, size, size, 3).
    """
    shorter = resize_to or round(size * 8 / 7)
    shorter = max(shorter, size)
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        img = rgb_one(img)
        h, w = img.shape[:2]
        factor = shorter / min(h, w)
        nh, nw = max(size, round(h * factor)), max(size, round(w * factor))
        top, left = (nh - size) // 2, (nw - size) // 2
        out[i] = resize_one(img, nh, nw)[top : top + size, left : left + size]
    return out


def clahe(images: Images, clip_limit: float = 2.0, tile: int = 8) -> list[np.ndarray]:
    """Contrast-limited adaptive histogram equalisation (OpenCV), on the lightness (L
    of CIELAB) of colour images so that hues are kept, directly on gray ones.

    images: uint8 (n, h, w[, 3]) or a list. Returns a list of the same shapes.
    """
    import cv2

    equalizer = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile, tile))
    out = []
    for img in images:
        if img.ndim == 2:
            out.append(equalizer.apply(np.ascontiguousarray(img)))
            continue
        lab = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2LAB)
        lab[..., 0] = equalizer.apply(np.ascontiguousarray(lab[..., 0]))
        out.append(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB))
    return out


def denoise(
    images: Images, strength: float = 7.0, template: int = 7, search: int = 21
) -> list[np.ndarray]:
    """Non-local-means denoising (OpenCV's fastNlMeansDenoising[Colored]).

    ``strength`` is the filter's h (and hColor): higher removes more noise and more
    detail. Slow: ~10 ms on a 224 x 224 photo, ~120 ms on a full-size one, so recipes
    run it after ``resize_crop``.

    images: uint8 (n, h, w[, 3]) or a list. Returns a list of the same shapes.
    """
    import cv2

    out = []
    for img in images:
        img = np.ascontiguousarray(img)
        if img.ndim == 2:
            out.append(cv2.fastNlMeansDenoising(img, None, strength, template, search))
        else:
            out.append(
                cv2.fastNlMeansDenoisingColored(img, None, strength, strength, template, search)
            )
    return out
