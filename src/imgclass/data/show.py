"""A labelled grid of examples per class, as a PNG (Pillow only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from imgclass.data.store import PreparedDataset
from imgclass.errors import ConfigError

CELL = 56  # pixels per example for small bitmaps (28x28 digits and doodles, enlarged 2x)
PHOTO_CELL = 160  # pixels per example for images larger than CELL (224x224 photos)
MAX_LABEL_WIDTH = 240  # longer class names are cut with an ellipsis
LINE = 18  # pixels per caption line
MAX_CAPTION_LINES = 6  # narrow grids wrap the caption; past this it is cut


def cell_size(image_shape: tuple[int, ...]) -> int:
    """Pixels per example: small bitmaps are enlarged to CELL, larger images (photos) get
    a PHOTO_CELL cell, or their own size when smaller, so that they stay recognisable."""
    side = max(image_shape[:2])
    return CELL if side + 4 <= CELL else min(PHOTO_CELL, side + 4)


def thumbnail(image: np.ndarray, side: int) -> Any:
    """RGB Pillow image fitting ``side`` x ``side``, aspect kept: small bitmaps enlarged
    with crisp pixels (nearest), larger images reduced smoothly (Lanczos, antialiased)."""
    from PIL import Image

    tile = Image.fromarray(image).convert("RGB")
    scale = side / max(tile.size)
    size = (max(1, round(tile.width * scale)), max(1, round(tile.height * scale)))
    if scale >= 1:
        return tile.resize(size, Image.Resampling.NEAREST)
    return tile.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def example_grid(
    ds: PreparedDataset,
    split: str,
    per_class: int = 8,
    classes: list[str] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """uint8 RGB picture: a caption (the split and the recipe the images went through),
    then one row per class, ``per_class`` random examples each."""
    from PIL import Image, ImageDraw, ImageFont

    names = classes or ds.classes
    unknown = [c for c in names if c not in ds.classes]
    if unknown:
        raise ConfigError(f"unknown class(es) {unknown}; the dataset has {len(ds.classes)} classes")
    labels = ds.labels(split)
    rng = np.random.default_rng(seed)
    font = ImageFont.load_default(size=14)
    cell = cell_size(tuple(ds.image_shape))
    counts = {name: int(np.sum(labels == ds.classes.index(name))) for name in names}
    texts = [_fit(f"{name} ({counts[name]})", font) for name in names]
    left = min(MAX_LABEL_WIDTH, int(max(font.getlength(t) for t in texts)) + 16)
    width = left + per_class * cell
    lines = [part for line in caption(ds, split) for part in _wrap(line, font, width - 12)]
    lines = lines[:MAX_CAPTION_LINES]
    header = LINE * len(lines) + 8
    canvas = Image.new("RGB", (width, header + len(names) * cell), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((6, 4 + i * LINE), _fit(line, font, width - 12), fill="dimgray", font=font)
    for row, (name, text) in enumerate(zip(names, texts, strict=True)):
        top = header + row * cell
        where = np.flatnonzero(labels == ds.classes.index(name))
        pick = np.sort(rng.choice(where, size=min(per_class, len(where)), replace=False))
        draw.text((6, top + cell // 2 - 8), text, fill="black", font=font)
        for col, img in enumerate(ds.images(split)[pick] if len(pick) else []):
            tile = thumbnail(img, cell - 4)
            x = left + col * cell + (cell - tile.width) // 2
            canvas.paste(tile, (x, top + (cell - tile.height) // 2))
    return np.asarray(canvas)


def caption(ds: PreparedDataset, split: str) -> list[str]:
    """What the pictures show: the split, the recipe they went through, and why that
    recipe was chosen (when the manifest says)."""
    recipe = ds.manifest.get("recipe") or {}
    doc = recipe.get("doc") or "custom steps"
    lines = [f"{split} split, after recipe {recipe.get('name', '?')}: {doc}"]
    if ds.manifest.get("recipe_reason"):
        lines.append(f"why: {ds.manifest['recipe_reason']}")
    return lines


def _wrap(text: str, font: Any, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` pixels, broken between words."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _fit(text: str, font: Any, width: int = MAX_LABEL_WIDTH - 16) -> str:
    """``text``, cut with an ellipsis to fit ``width`` pixels."""
    while len(text) > 4 and font.getlength(text) > width:
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
