"""Line-width standardisation: thin-line and thick-line drawings made to look alike.

The Quick, Draw! bitmaps in ``../shared/data`` were drawn with ~1 px lines, Google's
own ``.npy`` bitmaps and our canvas renderings with ~1.5 px lines, and people draw on
a canvas with any brush. A model trained on one kind sees another world in the other,
so the ``sketch`` recipe brings every drawing to one stroke width.

Width is measured as ink area / skeleton length: the area is exact on anti-aliased
images (the sum of the coverage), and the length of a one-pixel skeleton barely depends
on the line's width. The skeleton is Guo and Hall's thinning (CACM 32(3), 1989), run
on the whole batch at once through a 256-entry table of neighbourhoods.
"""

from __future__ import annotations

import math

import numpy as np

from imgclass.data.preprocess._batch import Images, stack_if_uniform

SKELETON_THRESHOLD = 48  # grey level above which a pixel belongs to the line's mask
MIN_CHANGE = 0.2  # px: closer to the target than this, an image is left as it is
UPSAMPLE = 2  # small images are redrawn at twice their size, then shrunk back
BLUR_SIGMA = 0.4  # px, the blur that turns each line into a known profile
# The blur an anti-aliased bitmap already has (pixel integration, the bilinear
# enlargement), as a variance in px^2, fitted on cairo renderings (see line_width).
SOURCE_VARIANCE = 0.35
_SIGMA_TOTAL = math.sqrt(BLUR_SIGMA**2 + SOURCE_VARIANCE)
SOFTNESS = 0.1  # width of the soft threshold's ramp, as a fraction of full ink


def _neighbour_tables() -> tuple[np.ndarray, np.ndarray]:
    """Guo and Hall's deletion rule (their algorithm A1, CACM 32(3), 1989, as in OpenCV's
    ximgproc) for each of the 256 neighbourhoods, one table per sub-iteration. Bit k of
    the code is neighbour P(k+2): N, NE, E, SE, S, SW, W, NW. Unlike Zhang and Suen's,
    it keeps the ends of two-pixel-thick diagonal lines, which thresholded anti-aliased
    drawings are full of."""
    first = np.zeros(256, dtype=bool)
    second = np.zeros(256, dtype=bool)
    for code in range(256):
        p2, p3, p4, p5, p6, p7, p8, p9 = ((code >> k) & 1 for k in range(8))
        crossings = sum(
            (1 - a) & (b | c)
            for a, b, c in ((p2, p3, p4), (p4, p5, p6), (p6, p7, p8), (p8, p9, p2))
        )
        n1 = (p9 | p2) + (p3 | p4) + (p5 | p6) + (p7 | p8)
        n2 = (p2 | p3) + (p4 | p5) + (p6 | p7) + (p8 | p9)
        if crossings != 1 or not 2 <= min(n1, n2) <= 3:
            continue
        first[code] = ((p6 | p7 | (1 - p9)) & p8) == 0
        second[code] = ((p2 | p3 | (1 - p5)) & p4) == 0
    return first, second


_FIRST, _SECOND = (table.astype(np.uint8) for table in _neighbour_tables())
# Weight of each neighbour in the code, laid out as a 3 x 3 correlation kernel.
_CODE_KERNEL = np.array([[128, 1, 2], [64, 0, 4], [32, 16, 8]], dtype=np.float32)


def skeletonize(mask: np.ndarray, max_iter: int = 32) -> np.ndarray:
    """One-pixel-wide, 8-connected skeletons of a bool batch (n, h, w) (Guo-Hall).

    The batch is laid out as one tall image with a blank row between drawings, so one
    OpenCV correlation computes every pixel's neighbourhood code at C speed; drawings
    that stopped changing are set aside once they are half of those still thinned.
    """
    import cv2

    n, h, w = mask.shape
    if n == 1:
        return _skeletonize_one(mask[0], max_iter)[None]
    result = np.zeros((n, h + 1, w), dtype=np.uint8)
    result[:, :h] = mask
    part, index = result, np.arange(n)
    for _ in range(max_iter):
        flat = part.reshape(-1, w)  # a view: thinning it thins ``part``
        changed = np.zeros(len(index), dtype=bool)
        for table in (_FIRST, _SECOND):
            code = cv2.filter2D(flat, -1, _CODE_KERNEL, borderType=cv2.BORDER_CONSTANT)
            delete = cv2.LUT(code, table) & flat
            changed |= delete.reshape(part.shape).any(axis=(1, 2))
            flat -= delete
        if not changed.any():
            break
        if 2 * changed.sum() < len(index):
            result[index] = part
            part, index = part[changed], index[changed]
    result[index] = part
    return result[:, :h].astype(bool)


def _skeletonize_one(mask: np.ndarray, max_iter: int) -> np.ndarray:
    """``skeletonize`` of one bool image (h, w), without the batch's bookkeeping (what a
    request pays for); the same thinning, pass for pass."""
    import cv2

    flat: np.ndarray = np.ascontiguousarray(mask, dtype=np.uint8)
    for _ in range(max_iter):
        changed = False
        for table in (_FIRST, _SECOND):
            code = cv2.filter2D(flat, -1, _CODE_KERNEL, borderType=cv2.BORDER_CONSTANT)
            delete = cv2.LUT(code, table) & flat
            if delete.any():
                changed = True
                flat -= delete
        if not changed:
            break
    return flat.astype(bool)


def skeleton_length(skeleton: np.ndarray) -> np.ndarray:
    """Length in px of each 8-connected skeleton of a bool batch (n, h, w): float (n,).

    Horizontal and vertical neighbours are 1 px apart, diagonal ones sqrt(2); a diagonal
    step that a staircase already covers through a side neighbour is not counted twice.
    """
    s = skeleton
    horizontal = (s[:, :, 1:] & s[:, :, :-1]).sum(axis=(1, 2))
    vertical = (s[:, 1:] & s[:, :-1]).sum(axis=(1, 2))
    a, b = s[:, :-1, :-1], s[:, 1:, 1:]  # "\" diagonal pairs
    c, d = s[:, :-1, 1:], s[:, 1:, :-1]  # "/" diagonal pairs
    bridged_ab = a & b & ~(c | d)
    bridged_cd = c & d & ~(a | b)
    diagonal = bridged_ab.sum(axis=(1, 2)) + bridged_cd.sum(axis=(1, 2))
    length: np.ndarray = horizontal + vertical + math.sqrt(2.0) * diagonal
    return length.astype(np.float64)


def stroke_widths(images: Images, threshold: int = SKELETON_THRESHOLD) -> np.ndarray:
    """Mean line width in px of each image (ink = 255 on 0): ink area / skeleton length.

    images: uint8 (n, h, w) or a list of gray images. Returns float (n,); 0 for an image
    without ink.
    """
    images = stack_if_uniform(images)
    if not isinstance(images, np.ndarray):
        return np.array([stroke_widths(img[None], threshold)[0] for img in images])
    area = images.sum(axis=(1, 2), dtype=np.float64) / 255.0
    skeleton = skeletonize(images > threshold)
    # A chain of k pixels spans k px, one more than its k - 1 steps; a speck spans 1.
    length = skeleton_length(skeleton) + 1.0
    return np.where(area > 0, area / length, 0.0)


def line_width(
    images: Images, width: float = 1.4, max_change: float = 2.0, thin_margin: float = 1.0
) -> Images:
    """Bring each drawing's mean line width (``stroke_widths``) to ``width`` px, keeping
    its size and place. The default is the width of Google's bitmaps (and of our
    renderings) once the sketch recipe has fitted them: 16 / 288 * 28 * 24 / 26.3 px.

    Thin lines are redrawn by blur and threshold: a Gaussian blur wider than the line
    makes its profile depend only on its ink per unit length (its width, however it was
    anti-aliased), and the level at which that profile is ``width`` wide is known in
    closed form (``_threshold``); a soft threshold there, on a copy enlarged
    ``UPSAMPLE`` times and shrunk back by area averaging, redraws the lines at the target
    width with anti-aliased edges. Thick lines are eroded (a blend of the two nearest
    disks), but only when wider than the target by more than ``thin_margin``: crowded
    drawings also measure wide, and blurring would fill them in. A change is at most
    ``max_change`` px. Widths within ``MIN_CHANGE`` of the target are left alone.

    Measured on cairo renderings of real drawings against cairo's own rendering at
    1.4 px (mean absolute difference in grey levels, before -> after): 0.7 px lines
    19 -> 7, 1.0 px 11 -> 7, 2.5 px 27 -> 17, 3.5 px 48 -> 16; 1.4 px lines 0 -> 1.

    images: uint8 (n, h, w) or a list of gray images, ink = 255 on 0.
    Returns the same shapes.
    """
    widths = stroke_widths(images)
    out = []
    for img, current in zip(images, widths, strict=True):
        if 0 < current <= width - MIN_CHANGE:
            out.append(_redraw(img, max(current, width - max_change), width))
        elif current > width + thin_margin:
            out.append(_erode(img, min(current - width, max_change)))
        else:
            out.append(img)
    return np.stack(out) if isinstance(images, np.ndarray) else stack_if_uniform(out)


def _threshold(current: float, target: float) -> float:
    """Level, as a fraction of full ink, at which a full-ink line ``current`` px wide,
    blurred by the source's and our Gaussian (sigma ``_SIGMA_TOTAL`` px), is ``target``
    px wide: the profile is (erf((x + w/2) / s) - erf((x - w/2) / s)) / 2, s = sigma*sqrt 2.
    """
    s = _SIGMA_TOTAL * math.sqrt(2.0)
    return 0.5 * (math.erf((target + current) / (2 * s)) - math.erf((target - current) / (2 * s)))


def _redraw(img: np.ndarray, current: float, target: float) -> np.ndarray:
    """One image's lines, ``current`` px wide on average, redrawn ``target`` px wide."""
    import cv2

    h, w = img.shape
    k = UPSAMPLE if max(h, w) < 64 else 1  # large images have the resolution already
    big = cv2.resize(img.astype(np.float32), (w * k, h * k), interpolation=cv2.INTER_LINEAR)
    blurred = cv2.GaussianBlur(big, (0, 0), BLUR_SIGMA * k)
    level = 255.0 * _threshold(current, target)
    ramp = np.clip((blurred - level) / (SOFTNESS * 255.0) + 0.5, 0.0, 1.0)
    small = cv2.resize(ramp, (w, h), interpolation=cv2.INTER_AREA)
    out = np.rint(small * 255.0).astype(np.uint8)
    return out if out.any() else img  # never erase a drawing


def _erode(img: np.ndarray, change: float) -> np.ndarray:
    """One image's lines made ``change`` px thinner: grey erosion on a copy enlarged
    ``UPSAMPLE`` times, blending the two nearest disks for the fraction of a pixel."""
    import cv2

    h, w = img.shape
    k = UPSAMPLE if max(h, w) < 64 else 1
    radius = change * k / 2.0  # in enlarged pixels, on each side of the line
    inner = math.floor(radius)
    big = cv2.resize(img, (w * k, h * k), interpolation=cv2.INTER_LINEAR)
    near = cv2.erode(big, _disk(inner)) if inner else big
    far = cv2.erode(big, _disk(inner + 1))
    blended = cv2.addWeighted(near, 1.0 - (radius - inner), far, radius - inner, 0.0)
    out = cv2.resize(blended, (w, h), interpolation=cv2.INTER_AREA)
    return out if out.any() else img  # never erase a drawing


def _disk(radius: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
