"""A labelled grid of examples per class, as a PNG (Pillow only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from imgclass.data.store import PreparedDataset
from imgclass.errors import ConfigError

CELL = 56  # pixels per example in the picture
MAX_LABEL_WIDTH = 240  # longer class names are cut with an ellipsis


def example_grid(
    ds: PreparedDataset,
    split: str,
    per_class: int = 8,
    classes: list[str] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """uint8 RGB picture: one row per class, ``per_class`` random examples each."""
    from PIL import Image, ImageDraw, ImageFont

    names = classes or ds.classes
    unknown = [c for c in names if c not in ds.classes]
    if unknown:
        raise ConfigError(f"unknown class(es) {unknown}; the dataset has {len(ds.classes)} classes")
    labels = ds.labels(split)
    rng = np.random.default_rng(seed)
    font = ImageFont.load_default(size=14)
    counts = {name: int(np.sum(labels == ds.classes.index(name))) for name in names}
    texts = [_fit(f"{name} ({counts[name]})", font) for name in names]
    left = min(MAX_LABEL_WIDTH, int(max(font.getlength(t) for t in texts)) + 16)
    canvas = Image.new("RGB", (left + per_class * CELL, len(names) * CELL), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (name, text) in enumerate(zip(names, texts, strict=True)):
        where = np.flatnonzero(labels == ds.classes.index(name))
        pick = np.sort(rng.choice(where, size=min(per_class, len(where)), replace=False))
        draw.text((6, row * CELL + CELL // 2 - 8), text, fill="black", font=font)
        for col, img in enumerate(ds.images(split)[pick] if len(pick) else []):
            tile = (
                Image.fromarray(img)
                .convert("RGB")
                .resize((CELL - 4, CELL - 4), Image.Resampling.NEAREST)
            )
            canvas.paste(tile, (left + col * CELL + 2, row * CELL + 2))
    return np.asarray(canvas)


def _fit(text: str, font: Any) -> str:
    """``text``, cut with an ellipsis to fit MAX_LABEL_WIDTH - 16 pixels."""
    while len(text) > 4 and font.getlength(text) > MAX_LABEL_WIDTH - 16:
        text = text[:-2] + "…"
    return text


def save_grid(
    ds: PreparedDataset,
    out: str | Path,
    split: str = "train",
    per_class: int = 8,
    classes: list[str] | None = None,
    max_classes: int = 40,
) -> Path:
    """Write the grid to ``out`` (PNG). At most ``max_classes`` rows unless classes are named."""
    from PIL import Image

    if split not in ds.splits:
        raise ConfigError(f"split {split!r} is empty; the dataset has {', '.join(ds.splits)}")
    names = classes or ds.classes[:max_classes]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    Image.fromarray(example_grid(ds, split, per_class, names)).save(tmp, format="PNG")
    tmp.replace(out)
    return out
