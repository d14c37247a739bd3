"""The faster renderer and simplifier against the implementation they replaced.

``render_reference.py`` is a frozen copy of ``imgclass.data.render`` as it was before
its speed-up (issue 10): ``simplify_raw`` and ``render_strokes`` must give the same
bytes on real Quick, Draw! drawings, at the serving size and at others."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import render_reference as old

from imgclass.data.render import rdp_many, render_strokes, simplify_raw


@pytest.fixture(scope="module")
def raw_drawings(shared_data):
    """Every 40th real raw drawing: 239 drawings over most of the 345 categories."""
    with gzip.open(shared_data / "quickdraw_strokes_raw.ndjson.gz", "rt") as f:
        lines = f.readlines()[5::40]
    return [[np.asarray(s, np.float32).T for s in json.loads(line)["drawing"]] for line in lines]


def assert_same_strokes(ours, theirs):
    assert len(ours) == len(theirs)
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.dtype == reference.dtype
        np.testing.assert_array_equal(mine, reference)


def test_simplify_raw_is_unchanged_on_real_drawings(raw_drawings):
    assert len(raw_drawings) > 200
    for drawing in raw_drawings:
        assert_same_strokes(simplify_raw(drawing), old.simplify_raw(drawing))


def test_simplify_raw_is_unchanged_at_other_epsilons(raw_drawings):
    for drawing in raw_drawings[:60]:
        for epsilon in (0.0, 0.5, 7.0):
            assert_same_strokes(simplify_raw(drawing, epsilon), old.simplify_raw(drawing, epsilon))


def test_rdp_many_is_unchanged_on_random_polylines():
    rng = np.random.default_rng(1)
    for _ in range(200):
        lines = [rng.normal(0, 5, size=(rng.integers(0, 30), 2)) for _ in range(3)]
        lines.append(np.round(rng.normal(0, 3, size=(rng.integers(0, 30), 2))))  # ties
        epsilon = float(rng.choice([-1.0, 0.0, 1.0, 3.0]))
        assert_same_strokes(rdp_many(lines, epsilon), old.rdp_many(lines, epsilon))


def test_render_is_unchanged_on_real_drawings(raw_drawings):
    for drawing in raw_drawings:
        simple = old.simplify_raw(drawing)
        ours = render_strokes(simple)
        assert ours.dtype == np.uint8 and ours.shape == (28, 28)
        np.testing.assert_array_equal(ours, old.render_strokes(simple))


@pytest.mark.parametrize(
    ("settings", "count"),
    [
        ({"size": 64}, 60),
        ({"size": 33}, 60),
        ({"size": 1}, 20),
        ({"size": 28, "line_diameter": 6.0, "padding": 0.0}, 60),
        ({"size": 48, "line_diameter": 30.0, "padding": 5.0}, 60),
    ],
)
def test_render_is_unchanged_at_other_sizes_and_widths(raw_drawings, settings, count):
    for drawing in sorted(raw_drawings, key=len, reverse=True)[:count]:
        simple = old.simplify_raw(drawing)
        np.testing.assert_array_equal(
            render_strokes(simple, **settings), old.render_strokes(simple, **settings)
        )


def test_render_is_unchanged_on_unsimplified_strokes(raw_drawings):
    """Canvas coordinates (beyond 0..255, fractional, with repeated points) as they come."""
    for drawing in raw_drawings[:80]:
        np.testing.assert_array_equal(render_strokes(drawing), old.render_strokes(drawing))


def test_render_is_unchanged_when_strokes_are_composited_in_batches(raw_drawings, monkeypatch):
    """Large sizes composite a few strokes at a time; a small cell budget does it at 28."""
    import imgclass.data.render as render

    monkeypatch.setattr(render, "_CELLS", 2_000)  # two strokes per batch at 28 px
    for drawing in sorted(raw_drawings, key=len, reverse=True)[:20]:
        simple = old.simplify_raw(drawing)
        np.testing.assert_array_equal(render_strokes(simple), old.render_strokes(simple))
