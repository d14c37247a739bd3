"""Augmentation: identity at zero strength, seeded, shape- and range-preserving, and
checked against independent references (scipy's affine resampling, torch's flip, the
stroke-5 encoder of imgclass.data.sequences)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from imgclass.data.sequences import pad_sequences, stroke3_to_drawing, to_stroke5
from imgclass.train.augment import (
    affine_matrices,
    augment_images,
    augment_sequences,
    color_jitter,
    drop_strokes,
    elastic_field,
    jitter_points,
    random_affine,
    random_erasing,
    random_hflip,
    random_resized_crop,
)
from imgclass.train.config import AUGMENT_PRESETS, Augment, build_augment


@pytest.fixture(scope="module")
def digits(shared_data):
    m = np.load(shared_data / "mnist.npz")
    return torch.from_numpy(m["x_train"][:16]).float().div(255).unsqueeze(1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_nothing_happens_at_zero_strength(digits):
    assert augment_images(digits, Augment(), gen()) is digits
    zero = dict(rotation=0, scale=0, shear=0, shift=0)
    torch.testing.assert_close(random_affine(digits, gen(), **zero), digits, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        random_resized_crop(digits, gen(), min_scale=1.0, ratio=(1, 1)), digits, atol=1e-5, rtol=0
    )
    torch.testing.assert_close(color_jitter(digits, gen(), 0, 0, 0), digits)
    assert torch.equal(random_erasing(digits, gen(), p=0.0), digits)
    assert torch.equal(random_hflip(digits, gen(), p=0.0), digits)


@pytest.mark.parametrize("preset", ["affine", "elastic", "photo"])
def test_seeded_and_label_safe_shapes(digits, preset):
    aug = build_augment({"preset": preset})
    for x in (digits, digits.expand(-1, 3, -1, -1).contiguous()):
        a = augment_images(x, aug, gen(1))
        assert a.shape == x.shape and a.dtype == x.dtype
        assert a.min() >= 0 and a.max() <= 1
        assert torch.equal(a, augment_images(x, aug, gen(1)))
        assert not torch.equal(a, augment_images(x, aug, gen(2)))
        assert not torch.allclose(a, x)


def test_affine_matches_scipy_resampling(digits):
    """grid_sample with our matrices == scipy's order-1 affine_transform with the same map
    (pixel coordinates derived from affine_grid's convention, align_corners=False)."""
    h = w = 28
    theta = affine_matrices(len(digits), gen(3), (h, w), rotation=20, scale=0.2, shear=10, shift=3)
    ours = random_affine(digits, gen(3), rotation=20, scale=0.2, shear=10, shift=3)
    for i in range(4):
        a = theta[i].double().numpy()
        # output pixel (r, c) -> normalised (x, y) -> input normalised -> input pixel
        to_norm = np.array([[0, 2 / w, 1 / w - 1], [2 / h, 0, 1 / h - 1], [0, 0, 1]])
        from_norm = np.array([[0, h / 2, h / 2 - 0.5], [w / 2, 0, w / 2 - 0.5], [0, 0, 1]])
        m = from_norm @ np.vstack([a, [0, 0, 1]]) @ to_norm
        reference = ndimage.affine_transform(
            digits[i, 0].double().numpy(), m[:2, :2], offset=m[:2, 2], order=1, mode="grid-constant"
        )
        np.testing.assert_allclose(ours[i, 0].numpy(), reference, atol=1e-5)


def test_affine_parameters_stay_in_their_ranges():
    theta = affine_matrices(2000, gen(), (28, 28), rotation=15, scale=0.15, shear=0, shift=3)
    linear = theta[:, :, :2]
    zoom = 1 / torch.linalg.det(linear).sqrt()  # det of (rotation / zoom) = 1 / zoom^2
    assert zoom.min() >= 0.85 - 1e-4 and zoom.max() <= 1.15 + 1e-4
    angle = torch.rad2deg(torch.atan2(linear[:, 1, 0], linear[:, 0, 0]))
    assert angle.abs().max() <= 15 + 1e-4 and angle.abs().max() > 14
    shift_px = theta[:, :, 2] * 14  # normalised units -> pixels for a 28-pixel side
    assert shift_px.abs().max() <= 3 + 1e-4 and shift_px.abs().max() > 2.9


def test_elastic_field_is_smooth_and_of_the_asked_size():
    field = elastic_field(64, (28, 28), gen(), alpha=2.0, sigma=4.0) * 14  # in pixels
    assert field.shape == (64, 28, 28, 2)
    per_image = field.permute(0, 3, 1, 2).flatten(1).std(dim=1)
    torch.testing.assert_close(per_image, torch.full((64,), 2.0), atol=1e-3, rtol=0)
    neighbours = (field[:, :, 1:] - field[:, :, :-1]).abs().mean()
    assert neighbours < 0.25 * field.abs().mean()  # smooth: close pixels move together


def test_flip_and_erasing_against_plain_references(digits):
    torch.testing.assert_close(random_hflip(digits, gen(), p=1.0), digits.flip(-1))
    ones = torch.ones(200, 1, 28, 28)
    erased = random_erasing(ones, gen(), p=1.0, max_area=0.2)
    zero_fraction = (erased == 0).float().mean(dim=(1, 2, 3))
    assert zero_fraction.min() > 0 and zero_fraction.max() <= 0.2 + 2 * 28 / 784
    for img in erased[:20, 0]:  # the blanked part is one axis-aligned rectangle
        rows, cols = torch.nonzero(img == 0, as_tuple=True)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box == len(rows)
    assert (random_erasing(ones, gen(), p=0.5) == 0).flatten(1).any(1).float().mean() == (
        pytest.approx(0.5, abs=0.1)
    )


def test_colour_jitter_factors():
    x = torch.full((500, 3, 4, 4), 0.5)
    x[:, 0] = 0.2
    out = color_jitter(x, gen(), brightness=0.2, contrast=0.0, saturation=0.0)
    ratio = out / x
    assert ratio.min() >= 0.8 - 1e-6 and ratio.max() <= 1.2 + 1e-6
    torch.testing.assert_close(ratio, ratio[:, :1, :1, :1].expand_as(ratio))  # one per image
    grey = color_jitter(x, gen(), brightness=0.0, contrast=0.0, saturation=1.0)
    assert (grey[:, 0] - grey[:, 1]).abs().max() > 0  # saturation changes colour balance


# --- sequences -----------------------------------------------------------------------


def drawing(seed: int, strokes: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 255, size=(rng.integers(2, 6), 2)).astype(np.float32)
        for _ in range(strokes)
    ]


def encoded(drawings):
    seqs, lengths = pad_sequences([to_stroke5(d) for d in drawings], 40)
    return torch.from_numpy(seqs), torch.from_numpy(lengths)


def decode(seq: torch.Tensor, length: int) -> list[np.ndarray]:
    s5 = seq[:length].numpy()
    s3 = np.column_stack([s5[:-1, :2], s5[:-1, 3]])  # drop the end row
    return [np.round(s) for s in stroke3_to_drawing(s3)]


def test_stroke_dropout_keeps_whole_strokes_in_place():
    drawings = [drawing(i, 4) for i in range(30)]
    seqs, lengths = encoded(drawings)
    out, new_lengths = drop_strokes(seqs, lengths, gen(), p=0.5)
    dropped_any = False
    for d, seq, n in zip(drawings, out, new_lengths, strict=True):
        kept = decode(seq, int(n))
        assert 1 <= len(kept) <= len(d)
        dropped_any |= len(kept) < len(d)
        remaining = [s for s in d]  # each kept stroke is an original one, in order, same place
        for stroke in kept:
            index = next(i for i, s in enumerate(remaining) if np.array_equal(s, stroke))
            remaining = remaining[index + 1 :]
        assert seq[n - 1, 4] == 1 and (seq[n:, 4] == 1).all() and (seq[n:, :4] == 0).all()
    assert dropped_any


def test_stroke_dropout_at_one_keeps_the_first_stroke_and_at_zero_nothing():
    drawings = [drawing(i, 3) for i in range(5)]
    seqs, lengths = encoded(drawings)
    out, new_lengths = drop_strokes(seqs, lengths, gen(), p=1.0)
    expected, expected_lengths = encoded([d[:1] for d in drawings])
    assert torch.equal(new_lengths, expected_lengths)
    torch.testing.assert_close(out, expected)
    same, same_lengths = drop_strokes(seqs, lengths, gen(), p=0.0)
    torch.testing.assert_close(same, seqs)
    assert torch.equal(same_lengths, lengths)


def test_point_jitter_moves_only_real_points():
    seqs, lengths = encoded([drawing(i, 3) for i in range(50)])
    out = jitter_points(seqs, lengths, gen(), std=0.01)
    moved = (out - seqs)[:, :, :2]
    steps = torch.arange(seqs.shape[1])[None]
    real = steps < lengths[:, None] - 1  # the last step is stroke-5's end row
    assert (moved[~real] == 0).all() and (out[:, :, 2:] == seqs[:, :, 2:]).all()
    assert moved[real].std().item() == pytest.approx(0.01, rel=0.1)
    aug = build_augment({"preset": "sequence"})
    a = augment_sequences(seqs, lengths, aug, gen(4))
    b = augment_sequences(seqs, lengths, aug, gen(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert AUGMENT_PRESETS["sequence"]["stroke_dropout"] > 0
