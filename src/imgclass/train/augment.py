"""Batched, seeded augmentation on torch tensors, on whatever device they live.

Images are float (N, C, H, W) in [0, 1]; sequences float (N, T, F) stroke-3/stroke-5
with int64 lengths (N,). Every random number comes from the ``generator`` passed in
(a CPU ``torch.Generator``), so the same seed gives the same batch on any device, and
every operation is the identity at zero strength.

Sketches and digits are augmented after normalisation (DESIGN.md: rotating or scaling
the top-left-aligned raw bitmaps pushes ink off the canvas). Affine and elastic
distortions share one resampling (``grid_sample``), so a batch is interpolated once.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from imgclass.train.config import Augment


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    import torch

    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float32)


def augment_images(x: torch.Tensor, aug: Augment, generator: torch.Generator) -> torch.Tensor:
    """Every image augmentation that ``aug`` switches on, in a fixed order: resized crop,
    padded crop, affine + elastic, flip, colour jitter, erasing. x: float (N, C, H, W)
    in [0, 1]."""
    if aug.crop_scale < 1:
        x = random_resized_crop(x, generator, aug.crop_scale)
    if aug.pad_crop:
        x = random_pad_crop(x, generator, aug.pad_crop)
    if aug.rotation or aug.scale or aug.shear or aug.shift or aug.elastic_alpha:
        x = random_affine(
            x,
            generator,
            rotation=aug.rotation,
            scale=aug.scale,
            shear=aug.shear,
            shift=aug.shift,
            elastic_alpha=aug.elastic_alpha,
            elastic_sigma=aug.elastic_sigma,
        )
    if aug.hflip:
        x = random_hflip(x, generator, aug.hflip)
    if aug.brightness or aug.contrast or aug.saturation:
        x = color_jitter(x, generator, aug.brightness, aug.contrast, aug.saturation)
    if aug.erasing:
        x = random_erasing(x, generator, aug.erasing, aug.erasing_area)
    return x


def affine_matrices(
    n: int,
    generator: torch.Generator,
    size: tuple[int, int],
    rotation: float,
    scale: float,
    shear: float,
    shift: float,
) -> torch.Tensor:
    """(n, 2, 3) matrices mapping output to input coordinates in affine_grid's [-1, 1]
    space: rotation and shear (degrees), scale 1 +/- ``scale``, shift (pixels)."""
    import torch

    h, w = size
    angle = _uniform(n, -rotation, rotation, generator) * (math.pi / 180)
    zoom = _uniform(n, 1 - scale, 1 + scale, generator)
    sh = torch.tan(_uniform(n, -shear, shear, generator) * (math.pi / 180))
    tx = _uniform(n, -shift, shift, generator) * (2 / w)
    ty = _uniform(n, -shift, shift, generator) * (2 / h)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    row0 = torch.stack([cos, -sin + sh * cos, tx], dim=1)
    row1 = torch.stack([sin, cos + sh * sin, ty], dim=1)
    return torch.stack([row0, row1], dim=1)


def elastic_field(
    n: int, size: tuple[int, int], generator: torch.Generator, alpha: float, sigma: float
) -> torch.Tensor:
    """Smooth random displacements (n, H, W, 2) in [-1, 1] grid units whose standard
    deviation is ``alpha`` pixels, smoothed by a Gaussian of ``sigma`` pixels (Simard)."""
    import torch
    import torch.nn.functional as F

    h, w = size
    noise = torch.rand(n * 2, 1, h, w, generator=generator) * 2 - 1
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    smooth = F.conv2d(noise, kernel.view(1, 1, 1, -1), padding=(0, radius))
    smooth = F.conv2d(smooth, kernel.view(1, 1, -1, 1), padding=(radius, 0))
    smooth = smooth.view(n, 2, h, w)
    smooth = smooth / smooth.flatten(1).std(dim=1).clamp(min=1e-8).view(n, 1, 1, 1)
    pixels = smooth * alpha
    units = torch.stack([pixels[:, 0] * (2 / w), pixels[:, 1] * (2 / h)], dim=-1)
    return units


def random_affine(
    x: torch.Tensor,
    generator: torch.Generator,
    rotation: float = 15.0,
    scale: float = 0.15,
    shear: float = 8.0,
    shift: float = 3.0,
    elastic_alpha: float = 0.0,
    elastic_sigma: float = 4.0,
) -> torch.Tensor:
    """Each image gets its own rotation, scale, shear and shift, plus an elastic
    distortion when ``elastic_alpha`` > 0; one bilinear resampling, zeros outside."""
    import torch.nn.functional as F

    n, _, h, w = x.shape
    theta = affine_matrices(n, generator, (h, w), rotation, scale, shear, shift)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    if elastic_alpha > 0:
        grid = grid + elastic_field(n, (h, w), generator, elastic_alpha, elastic_sigma)
    grid = grid.to(device=x.device, dtype=x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_resized_crop(
    x: torch.Tensor,
    generator: torch.Generator,
    min_scale: float = 0.6,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Photos: a random crop covering ``min_scale``-1 of the area, aspect ratio in
    ``ratio``, resized back to (H, W) (as torchvision's RandomResizedCrop)."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    area = _uniform(n, min_scale, 1.0, generator)
    log_ratio = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator)
    aspect = torch.exp(log_ratio)
    cw = torch.sqrt(area * aspect).clamp(max=1.0)  # fraction of the width
    ch = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (_uniform(n, -1.0, 1.0, generator)) * (1 - cw)
    cy = (_uniform(n, -1.0, 1.0, generator)) * (1 - ch)
    zero = torch.zeros(n)
    theta = torch.stack(
        [torch.stack([cw, zero, cx], dim=1), torch.stack([zero, ch, cy], dim=1)], dim=1
    )
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    grid = grid.to(device=x.device, dtype=x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_pad_crop(x: torch.Tensor, generator: torch.Generator, pad: float) -> torch.Tensor:
    """Zero-pad each side by ``pad`` x the side (at least 1 px) and crop back to (H, W)
    at a random place: each image moves by whole pixels, nothing is resampled (the
    padded random crop of CIFAR's recipe, here as one gather for the whole batch)."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    ph, pw = max(1, round(pad * h)), max(1, round(pad * w))
    top = torch.randint(0, 2 * ph + 1, (n,), generator=generator).to(x.device)
    left = torch.randint(0, 2 * pw + 1, (n,), generator=generator).to(x.device)
    padded = F.pad(x, (pw, pw, ph, ph))
    rows = torch.arange(h, device=x.device)[None, :] + top[:, None]  # (n, h)
    cols = torch.arange(w, device=x.device)[None, :] + left[:, None]  # (n, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (n, h, w, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``."""
    import torch

    flip = (torch.rand(len(x), generator=generator) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def color_jitter(
    x: torch.Tensor,
    generator: torch.Generator,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
) -> torch.Tensor:
    """Per-image brightness (multiply), contrast (towards the mean grey) and, for RGB,
    saturation (towards the pixel's luma) factors in 1 +/- the given fractions."""
    import torch

    n = len(x)

    def factor(amount: float) -> torch.Tensor:
        return _uniform(n, 1 - amount, 1 + amount, generator).to(x).view(n, 1, 1, 1)

    b, c, s = factor(brightness), factor(contrast), factor(saturation)
    x = x * b
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * c + mean
    if x.shape[1] == 3 and saturation:
        weights = torch.tensor([0.299, 0.587, 0.114]).to(x).view(1, 3, 1, 1)
        gray = (x * weights).sum(dim=1, keepdim=True)
        x = (x - gray) * s + gray
    return x.clamp(0, 1)


def random_erasing(
    x: torch.Tensor, generator: torch.Generator, p: float = 0.25, max_area: float = 0.2
) -> torch.Tensor:
    """With probability ``p`` per image, set a random rectangle of 2%-``max_area`` of the
    image (aspect ratio 0.3-3.3) to 0, the background of ink-on-black bitmaps."""
    import torch

    n, _, h, w = x.shape
    hit = torch.rand(n, generator=generator) < p
    area = _uniform(n, min(0.02, max_area), max_area, generator)
    aspect = torch.exp(_uniform(n, math.log(0.3), math.log(3.3), generator))
    eh = (torch.sqrt(area * aspect) * h).clamp(1, h)
    ew = (torch.sqrt(area / aspect) * w).clamp(1, w)
    top = torch.rand(n, generator=generator) * (h - eh)
    left = torch.rand(n, generator=generator) * (w - ew)
    rows = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    cols = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    inside = (
        (rows >= top.view(n, 1, 1).floor())
        & (rows < (top + eh).view(n, 1, 1).floor())
        & (cols >= left.view(n, 1, 1).floor())
        & (cols < (left + ew).view(n, 1, 1).floor())
    )
    mask = (inside & hit.view(n, 1, 1)).to(x.device)
    return x.masked_fill(mask[:, None], 0.0)


# --- sequences -----------------------------------------------------------------------


def augment_sequences(
    seqs: torch.Tensor, lengths: torch.Tensor, aug: Augment, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stroke dropout then point jitter on (N, T, F) stroke-3/5 sequences (F = 3 or 5)."""
    if aug.stroke_dropout:
        seqs, lengths = drop_strokes(seqs, lengths, generator, aug.stroke_dropout)
    if aug.point_jitter:
        seqs = jitter_points(seqs, lengths, generator, aug.point_jitter)
    return seqs, lengths


def _real_points(seqs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(N, T) bool: the steps that are points (not padding, not stroke-5's end row)."""
    import torch

    t = torch.arange(seqs.shape[1], device=seqs.device)
    real = t[None, :] < lengths[:, None]
    if seqs.shape[2] == 5:
        real &= seqs[:, :, 4] < 0.5
    return real


def jitter_points(
    seqs: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator, std: float
) -> torch.Tensor:
    """Gaussian noise of ``std`` added to the (dx, dy) offset of every real point."""
    import torch

    noise = torch.randn(seqs.shape[0], seqs.shape[1], 2, generator=generator).to(seqs) * std
    noise = noise * _real_points(seqs, lengths)[:, :, None]
    out = seqs.clone()
    out[:, :, :2] += noise
    return out


def drop_strokes(
    seqs: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator, p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove each stroke with probability ``p`` (never all of a drawing's strokes).

    The remaining points keep their absolute positions: offsets are recomputed from the
    cumulative positions, the kept rows are packed to the front and the rest padded.
    """
    import torch

    n, steps, f = seqs.shape
    real = _real_points(seqs, lengths)
    lifted = seqs[:, :, 3 if f == 5 else 2] * real  # 1 on the last point of each stroke
    stroke = (torch.cumsum(lifted, dim=1) - lifted).long()  # stroke index of each step
    dropped = (torch.rand(n, steps + 1, generator=generator) < p).to(seqs.device)
    absent = torch.arange(steps + 1, device=seqs.device)[None] >= lifted.sum(dim=1)[:, None]
    dropped[:, 0] &= ~(dropped | absent).all(dim=1)  # a drawing keeps at least one stroke
    step_ok = torch.arange(steps, device=seqs.device)[None, :] < lengths[:, None]
    keep = step_ok & ~(real & dropped.gather(1, stroke.clamp(max=steps)))
    return _pack(seqs, keep, real)


def _pack(
    seqs: torch.Tensor, keep: torch.Tensor, real: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the ``keep`` rows (N, T) of each sequence, in order, offsets recomputed."""
    import torch

    n, steps, f = seqs.shape
    position = torch.cumsum(seqs[:, :, :2] * real[:, :, None], dim=1)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    packed = seqs.gather(1, order[:, :, None].expand(-1, -1, f)).clone()
    kept_pos = position.gather(1, order[:, :, None].expand(-1, -1, 2))
    kept_real = real.gather(1, order)
    lengths = keep.sum(dim=1)
    offsets = torch.diff(kept_pos, dim=1, prepend=torch.zeros_like(kept_pos[:, :1]))
    packed[:, :, :2] = offsets * kept_real[:, :, None]
    valid = torch.arange(steps, device=seqs.device)[None, :] < lengths[:, None]
    padding = torch.zeros(f, dtype=seqs.dtype, device=seqs.device)
    if f == 5:
        padding[4] = 1.0
    packed = torch.where(valid[:, :, None], packed, padding)
    return packed, lengths
