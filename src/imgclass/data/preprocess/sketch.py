"""Ops for drawings and digits: gray, ink = 255 on 0, size-normalised like MNIST.

MNIST's procedure, measured on its 70,000 digits: the bounding box of the ink (any
non-zero pixel) is exactly 20 px on its longer side for all but 16 digits, and the
centre of mass (row, col), in pixel-index coordinates, lies within 0.5 px of (14, 14)
for every digit: the box was moved by whole pixels to bring the centre of mass nearest
to (size / 2, size / 2). ``crop_to_ink`` + ``fit_box`` + ``center_of_mass`` do the same:
with the ``mnist`` recipe's ink threshold of 8, 96.6% of MNIST's digits come out
bit-identical (99.97% with a threshold of 0, which would let specks of scanner or JPEG
noise in user images stretch the box).
"""

from __future__ import annotations

import math

import numpy as np

from imgclass.data.preprocess._batch import (
    Images,
    gray_one,
    luma,
    luma_on_white,
    resize_one,
    stack_if_uniform,
)

INK_THRESHOLD = 16  # grey levels above this count as ink (JPEG noise and paper stay below)
LARGE_PIXELS = 4096  # images of this many pixels or more are searched one by one, by OpenCV


def to_gray(images: Images) -> Images:
    """RGB(A) -> luminance, bit-identical to PIL's ``convert("L")``; RGBA is first
    composited on white (transparent = paper). Gray batches pass through untouched.

    images: uint8 (n, h, w[, c]) or a list of such images. Returns (n, h, w) or a list.
    """
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            return images
        if images.shape[3] == 4:
            return luma_on_white(images)
        return images[..., 0] if images.shape[3] == 1 else luma(images)
    return stack_if_uniform([gray_one(img) for img in images])


def _border_levels(images: Images, percent: float) -> np.ndarray:
    """A percentile (nearest rank) of each image's outermost rows and columns: float
    (n,). Sorting ~100 values beats ``np.percentile``'s overhead on single images."""
    if isinstance(images, np.ndarray) and min(images.shape[1:3]) >= 2:
        border = np.concatenate(
            [images[:, 0], images[:, -1], images[:, 1:-1, 0], images[:, 1:-1, -1]], axis=1
        )
        return _nearest_rank(border, percent)
    return np.array([_nearest_rank(_border(img)[None], percent)[0] for img in images])


def _nearest_rank(values: np.ndarray, percent: float) -> np.ndarray:
    """The ``percent`` percentile of each row of (n, k) values: float (n,)."""
    rank = round(percent / 100.0 * (values.shape[1] - 1))
    return np.sort(values, axis=1)[:, rank].astype(np.float64)


def _border(img: np.ndarray) -> np.ndarray:
    """The outermost pixels of one gray image, as a flat array."""
    if min(img.shape) < 2:
        return img.ravel()
    return np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])


def invert_auto(images: Images, flatten: bool = True) -> Images:
    """Bring every image to ink = 255 on a 0 background, whichever polarity it came in.

    The border pixels are mostly background (drawings rarely fill their frame): when
    their median is above mid-grey, the ink is dark on light paper and the image is
    inverted. With ``flatten``, a background left above 0 (grey paper, a photographed
    page) is mapped to 0 by a linear stretch that keeps 255 at 255. The background
    level for that is the border's 10th percentile, so that a drawing touching its
    frame (Quick, Draw! bitmaps are aligned to the top-left corner) is not mistaken for
    grey paper; MNIST and Quick, Draw! bitmaps are left untouched.

    images: uint8 (n, h, w[, c]) or a list. Returns gray (n, h, w) or a list.
    """
    gray = to_gray(images)
    if len(gray) == 0:
        return gray
    dark_on_light = _border_levels(gray, 50) > 127.5
    if isinstance(gray, np.ndarray):
        fresh = gray is not images and gray.base is None  # not the caller's array or a view
        out = _inverted(gray, dark_on_light, fresh)
        return _flatten(out, _border_levels(out, 10)) if flatten else out
    out_list = [255 - img if dark else img for img, dark in zip(gray, dark_on_light, strict=True)]
    if not flatten:
        return out_list
    levels = _border_levels(out_list, 10)
    return [
        _flatten(img[None], level[None])[0] for img, level in zip(out_list, levels, strict=True)
    ]


def _inverted(gray: np.ndarray, dark: np.ndarray, fresh: bool) -> np.ndarray:
    """A new array: the images where ``dark`` (bool (n,)) inverted, the others as they
    are. One pass when all or none are (a canvas); ``fresh``: ``gray`` is ours to return."""
    if dark.all():
        return 255 - gray
    if not dark.any():
        return gray if fresh else gray.copy()
    return np.where(dark[:, None, None], 255 - gray, gray)


def _flatten(images: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Map each image's background level to 0, keeping 255 (only where it is above 0)."""
    lifted = background > 0
    if not lifted.any():
        return images
    out = images.copy()
    bg = background[lifted].astype(np.float32)[:, None, None]
    stretched = (images[lifted].astype(np.float32) - bg) * (255.0 / np.maximum(255.0 - bg, 1.0))
    out[lifted] = np.rint(stretched.clip(0, 255)).astype(np.uint8)
    return out


def ink_boxes(images: Images, threshold: int = INK_THRESHOLD) -> np.ndarray:
    """Bounding box of the pixels above ``threshold``: int (n, 4) of (top, bottom, left,
    right) with exclusive ends; (0, 0, 0, 0) for an image with no ink."""
    if not isinstance(images, np.ndarray):
        if len(images) == 0:
            return np.zeros((0, 4), dtype=np.int64)
        return np.vstack([ink_boxes(img[None], threshold) for img in images])
    if images.ndim == 3 and images.shape[1] * images.shape[2] >= LARGE_PIXELS:
        return np.array([_ink_box(img, threshold) for img in images], dtype=np.int64)
    mask: np.ndarray = np.asarray(images > threshold)
    rows = np.logical_or.reduce(mask, axis=2)
    cols = np.logical_or.reduce(mask, axis=1)
    h, w = images.shape[1:3]
    top, left = rows.argmax(axis=1), cols.argmax(axis=1)
    bottom, right = h - rows[:, ::-1].argmax(axis=1), w - cols[:, ::-1].argmax(axis=1)
    boxes = np.stack([top, bottom, left, right], axis=1)
    boxes[~rows.any(axis=1)] = 0
    return boxes


def _ink_box(img: np.ndarray, threshold: int) -> tuple[int, int, int, int]:
    """``ink_boxes`` of one large gray image, by OpenCV: two passes in C instead of
    numpy's four over every pixel (a 280 x 280 canvas)."""
    import cv2

    _, mask = cv2.threshold(np.ascontiguousarray(img), threshold, 255, cv2.THRESH_BINARY)
    left, top, width, height = cv2.boundingRect(mask)
    if width == 0 or height == 0:
        return 0, 0, 0, 0
    return top, top + height, left, left + width


def crop_to_ink(images: Images, threshold: int = INK_THRESHOLD) -> list[np.ndarray]:
    """Each image cut to the bounding box of its ink (pixels above ``threshold``).

    Returns a list of views of varying sizes; an image without ink is kept whole (it
    stays blank through the following steps).
    """
    gray = to_gray(images)
    boxes = ink_boxes(gray, threshold)
    return [
        img[t:b, lft:r] if b > t else img for img, (t, b, lft, r) in zip(gray, boxes, strict=True)
    ]


def fit_box(images: Images, box: int = 20) -> list[np.ndarray]:
    """Scale each image so that its longer side is ``box`` px, keeping the aspect ratio.

    Anti-aliased: area averaging when shrinking (as MNIST's normalisation of NIST's
    128 x 128 bilevel digits), bilinear when enlarging. Returns a list of images of
    shape (box, <= box) or (<= box, box).
    """
    out = []
    for img in images:
        h, w = img.shape[:2]
        factor = box / max(h, w)
        out.append(resize_one(img, max(1, round(h * factor)), max(1, round(w * factor))))
    return out


def mass_centers(images: Images) -> np.ndarray:
    """Centre of mass of the intensities of gray images, (row, col) in pixel-index
    coordinates: float (n, 2). A blank image's centre of mass is its geometric middle."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        weights = images.astype(np.float32)
        rows, cols = weights.sum(axis=2), weights.sum(axis=1)
        total = rows.sum(axis=1)
        safe = np.where(total > 0, total, 1.0)
        r = rows @ np.arange(images.shape[1], dtype=np.float32) / safe
        c = cols @ np.arange(images.shape[2], dtype=np.float32) / safe
        middle = (np.array(images.shape[1:3], dtype=np.float32) - 1) / 2
        return np.where((total > 0)[:, None], np.stack([r, c], axis=1), middle)
    out = np.empty((len(images), 2), dtype=np.float64)
    for i, img in enumerate(images):
        out[i] = _mass_center(img)
    return out


def _mass_center(img: np.ndarray) -> tuple[float, float]:
    import cv2

    m = cv2.moments(np.ascontiguousarray(img))
    if m["m00"] == 0:
        return (img.shape[0] - 1) / 2.0, (img.shape[1] - 1) / 2.0
    return m["m01"] / m["m00"], m["m10"] / m["m00"]


def _offset(center: float, size: int, ink_start: int, ink_end: int) -> int:
    """Whole-pixel offset that brings ``center`` nearest to size / 2, held back so that
    the ink span [ink_start, ink_end) stays on the canvas whenever it fits."""
    offset = math.floor(size / 2.0 - center + 0.5)
    low, high = -ink_start, size - ink_end  # the offsets that keep all the ink
    return min(max(offset, low), high) if low <= high else offset


def _placement(img: np.ndarray, size_h: int, size_w: int) -> tuple[int, int] | None:
    """(top, left) that centres one gray image's mass on a size_h x size_w canvas, or
    None for an image without ink."""
    import cv2

    img = np.ascontiguousarray(img)
    m = cv2.moments(img)
    if m["m00"] == 0:
        return None
    left, top, width, height = cv2.boundingRect(img)  # box of the non-zero pixels
    row, col = m["m01"] / m["m00"], m["m10"] / m["m00"]
    return _offset(row, size_h, top, top + height), _offset(col, size_w, left, left + width)


def center_of_mass(images: Images, size: int = 28) -> np.ndarray:
    """Paste each image into a ``size`` x ``size`` canvas, moved by whole pixels so that
    its centre of mass is nearest to (size / 2, size / 2), as MNIST did.

    A lopsided drawing is held back at the canvas edge rather than losing ink.
    images: uint8 (h, w[, c]) images, h, w <= size (larger ones are cut), made gray.
    Returns uint8 (n, size, size).
    """
    gray = to_gray(images)
    out = np.zeros((len(gray), size, size), dtype=np.uint8)
    for i, img in enumerate(gray):
        place = _placement(img, size, size)
        if place is not None:
            _paste(out[i], img, *place)
    return out


def _paste(canvas: np.ndarray, img: np.ndarray, top: int, left: int) -> None:
    """Copy ``img`` into ``canvas`` with its corner at (top, left), clipped to the canvas."""
    h, w = img.shape[:2]
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(canvas.shape[0], top + h), min(canvas.shape[1], left + w)
    if y1 > y0 and x1 > x0:
        canvas[y0:y1, x0:x1] = img[y0 - top : y1 - top, x0 - left : x1 - left]


def centroid(images: Images) -> Images:
    """Shift each image by whole pixels so that its centre of mass is nearest to the
    middle (h / 2, w / 2); no scaling, and no ink pushed off the canvas.

    images: uint8 (n, h, w) or a list. Returns the same shapes.
    """
    gray = to_gray(images)
    out = []
    for img in gray:
        shifted = np.zeros_like(img)
        place = _placement(img, *img.shape)
        if place is not None:
            _paste(shifted, img, *place)
        out.append(shifted)
    return np.stack(out) if isinstance(gray, np.ndarray) else out


def resize(images: Images, size: int = 28, keep_aspect: bool = False) -> Images:
    """Resize every image to ``size`` x ``size`` (anti-aliased).

    With ``keep_aspect``, the longer side is fitted to ``size`` and the shorter one is
    padded with 0 on both sides (for ink-on-black images). images: uint8 (n, h, w[, c])
    or a list. Returns uint8 (n, size, size[, c]).
    """
    if isinstance(images, np.ndarray) and images.shape[1:3] == (size, size):
        return images
    if not keep_aspect:
        return np.stack([resize_one(img, size, size) for img in images])
    out = []
    for img in fit_box(images, size):
        canvas = np.zeros((size, size, *img.shape[2:]), dtype=np.uint8)
        _paste(canvas, img, (size - img.shape[0]) // 2, (size - img.shape[1]) // 2)
        out.append(canvas)
    return np.stack(out)


def fit_center(
    images: Images, box: int = 20, size: int = 28, threshold: int = INK_THRESHOLD
) -> np.ndarray:
    """``crop_to_ink``, ``fit_box`` and ``center_of_mass`` in one step (kept because
    recipes saved by imgclass 0.1 name it)."""
    return center_of_mass(fit_box(crop_to_ink(images, threshold), box), size)
