"""Line-width standardisation against cairo's own lines and real thin/thick pairs."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from imgclass.data.builtin import BUILTIN_DIR
from imgclass.data.preprocess import (
    apply_recipe,
    get_recipe,
    line_width,
    skeletonize,
    stroke_widths,
)
from imgclass.data.preprocess.width import skeleton_length

cairo = pytest.importorskip("cairocffi")


@pytest.fixture(scope="module")
def drawings() -> list[tuple[str, list[np.ndarray]]]:
    """(word, raw strokes as (n, 2) x, y arrays) of the built-in real drawings, in file
    order: drawing k of a word is bitmap k of that word in doodles.npz."""
    out = []
    with gzip.open(BUILTIN_DIR / "doodles_strokes.ndjson.gz", "rt") as f:
        for line in f:
            record = json.loads(line)
            strokes = [np.array(s[:2], np.float64).T for s in record["drawing"]]
            out.append((record["word"], strokes))
    return out


def cairo_lines(strokes: list[np.ndarray], width: float, size: int = 28, box: int = 24):
    """A reference rendering: the drawing fitted to ``box`` px, centred, stroked by cairo
    with round caps and joins, ``width`` px wide, anti-aliased. uint8 (size, size)."""
    surface = cairo.ImageSurface(cairo.FORMAT_A8, size, size)
    ctx = cairo.Context(surface)
    points = np.vstack(strokes)
    low, extent = points.min(axis=0), np.ptp(points, axis=0)
    scale = box / max(extent.max(), 1.0)
    offset = (size - extent * scale) / 2
    ctx.set_line_width(width)
    ctx.set_line_cap(cairo.LINE_CAP_ROUND)
    ctx.set_line_join(cairo.LINE_JOIN_ROUND)
    for stroke in strokes:
        xy = (stroke - low) * scale + offset
        ctx.move_to(*xy[0])
        for x, y in xy[1:] if len(xy) > 1 else xy:
            ctx.line_to(x, y)
        ctx.stroke()
    surface.flush()
    data = np.frombuffer(surface.get_data(), np.uint8).reshape(size, surface.get_stride())
    return data[:, :size].copy()


@pytest.fixture(scope="module")
def sample(drawings) -> list[list[np.ndarray]]:
    return [strokes for _, strokes in drawings[::5]]  # 125 drawings, every category


def test_skeleton_of_hand_drawn_bars_is_one_pixel_wide_and_as_long():
    bars = np.zeros((2, 12, 24), bool)
    bars[0, 4:7, 2:22] = True  # a horizontal bar, 3 x 20
    for i in range(10):  # a diagonal band, 2 px thick, 10 steps
        bars[1, 1 + i, 2 + i : 4 + i] = True
    skeleton = skeletonize(bars)
    assert skeleton[0].sum(axis=0)[4:20].tolist() == [1] * 16  # one pixel per column
    length = skeleton_length(skeleton)
    assert 16 <= length[0] <= 20  # thinning eats at most a pixel or two at each end
    assert 8 * np.sqrt(2) <= length[1] <= 10 * np.sqrt(2) + 1


@pytest.mark.parametrize("width", [0.8, 1.4, 2.0])
def test_stroke_width_estimate_matches_cairos_line_width(sample, width):
    images = np.stack([cairo_lines(s, width) for s in sample])
    estimate = np.median(stroke_widths(images))
    assert estimate == pytest.approx(width, rel=0.1)  # measured within 7%


def _l1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b).mean())


@pytest.mark.parametrize(
    ("width", "most_after"),
    # Mean grey-level difference to cairo's 1.4 px lines; measured before -> after:
    # 0.7: 19 -> 7, 1.0: 11 -> 7, 2.5: 27 -> 17, 3.5: 48 -> 16.
    [(0.7, 0.5), (1.0, 0.8), (2.5, 0.8), (3.5, 0.5)],
)
def test_line_width_redraws_lines_like_cairo_at_the_target(sample, width, most_after):
    target = np.stack([cairo_lines(s, 1.4) for s in sample])
    images = np.stack([cairo_lines(s, width) for s in sample])
    out = line_width(images, width=1.4)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert _l1(out, target) < most_after * _l1(images, target)


def test_line_width_leaves_lines_at_the_target_alone(sample):
    images = np.stack([cairo_lines(s, 1.4) for s in sample])
    out = line_width(images, width=1.4)
    unchanged = (out == images).all(axis=(1, 2)).mean()
    assert unchanged > 0.8 and _l1(out, images) < 3  # crowded drawings measure wider


def test_sketch_makes_thin_bitmaps_and_thick_renderings_alike(drawings):
    """The real thin-line bitmaps against Google-style renderings of the same drawings."""
    from imgclass.data.render import render_strokes, simplify_raw

    with np.load(BUILTIN_DIR / "doodles.npz") as d:
        bitmaps, labels, classes = d["x"], d["y"], list(d["classes"])
    seen: dict[str, int] = {}
    thin, thick = [], []
    for word, strokes in drawings:
        k = seen[word] = seen.get(word, -1) + 1
        if k % 5 == 0:
            thin.append(bitmaps[np.flatnonzero(labels == classes.index(word))[k]])
            thick.append(render_strokes(simplify_raw([s.astype(np.float32) for s in strokes])))
    recipe = get_recipe("sketch")
    no_width = {**recipe, "steps": recipe["steps"][:-1]}
    ratios = {}
    for name, r in (("before", no_width), ("after", recipe)):
        a, b = apply_recipe(r, np.stack(thin)), apply_recipe(r, np.stack(thick))
        ratios[name] = (
            np.median(stroke_widths(a)) / np.median(stroke_widths(b)),
            a.sum() / b.sum(),  # ink, all drawings together
        )
    # Measured: widths 0.65 -> 0.98 of the thick ones', ink 0.74 -> 1.05.
    assert ratios["before"][0] < 0.7 and ratios["before"][1] < 0.8
    assert ratios["after"][0] == pytest.approx(1.0, abs=0.1)
    assert ratios["after"][1] == pytest.approx(1.0, abs=0.15)


def test_one_image_is_thinned_as_in_a_batch():
    """``skeletonize`` of one image (the server's case) takes its own path: the same
    skeletons as the batch path, image for image."""
    with np.load(BUILTIN_DIR / "doodles.npz") as d:
        masks = d["x"][:60] > 48
    batch = skeletonize(masks)
    singles = np.stack([skeletonize(m[None])[0] for m in masks])
    assert np.array_equal(batch, singles)
