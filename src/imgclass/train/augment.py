"""Batched, seeded augmentation on float tensors (N, C, H, W).

For sketches and digits: random affine (rotation, scale, shear, shift) through
``affine_grid``/``grid_sample``; applied after normalisation, as DESIGN.md advises.
No horizontal flips: not label-safe for every category.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def photo_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Photos: random resized crop (scale 0.7-1), horizontal flip, brightness/contrast jitter."""
    n = x.shape[0]
    out = random_affine(
        x, generator, rotation=0.0, scale=(1.0, 1.43), shear=0.0, shift=x.shape[-1] * 0.1
    )
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    brightness = 1 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.4
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.4
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * contrast + mean * brightness).clamp(0, 1)


def random_affine(
    x: torch.Tensor,
    generator: torch.Generator,
    rotation: float = 15.0,
    scale: tuple[float, float] = (0.85, 1.15),
    shear: float = 0.15,
    shift: float = 3.0,
) -> torch.Tensor:
    """Each image gets its own rotation (degrees), scale, shear and shift (pixels)."""
    n, _, h, w = x.shape

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    angle = uniform(-rotation, rotation) * math.pi / 180
    s = uniform(*scale)
    sh = uniform(-shear, shear)
    tx = uniform(-shift, shift) * 2 / w
    ty = uniform(-shift, shift) * 2 / h
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack(
        [
            torch.stack([cos, -sin + sh * cos, tx], dim=1),
            torch.stack([sin, cos + sh * sin, ty], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
