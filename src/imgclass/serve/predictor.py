"""Turns request payloads into model inputs with the bundle's own recipe, and times it."""

from __future__ import annotations

import base64
import binascii
import io
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgclass.bundle import Bundle, load_bundle
from imgclass.serve.inputs import BadInput
from imgclass.serve.inputs import parse_strokes as parse_strokes  # where routes found it


@dataclass
class Prediction:
    labels: list[str]
    probabilities: list[float]
    timing_ms: dict[str, float] = field(default_factory=dict)
    model_input: np.ndarray | None = None  # the image the model saw (H, W[, C]), if one


FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "MPO")
DECODE_MIN_SIDE = 1024  # px; see Predictor.decode_side
# Modes Image.reduce cannot handle: palette and 1-bit images are converted first; 16-bit
# gray is left whole (rare, and its range is mapped later by prepare_raw_image).
UNREDUCIBLE = ("P", "1")


def decode_image(data: bytes, max_pixels: int, min_side: int | None = None) -> Any:
    """Bytes of a PNG/JPEG/WebP/BMP/GIF (first frame) -> PIL image; BadInput otherwise.

    The size is checked from the header, before any pixel is decoded: more than
    ``max_pixels`` decoded pixels is refused (413). With ``min_side``, a large image is
    reduced by a whole factor while its shorter side stays at least ``min_side``: a JPEG
    is decoded at 1/2, 1/4 or 1/8 scale in the DCT (draft mode; its pixel count is
    checked at that scale), anything else is box-averaged (``Image.reduce``) right after
    decoding, so the recipe never runs on 25 million pixels to make a 28 x 28 input.
    An image whose shorter side is under ``2 * min_side`` is returned exactly as decoded.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadInput("the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in FORMATS:
                raise BadInput(
                    f"unsupported image format {img.format}; send PNG, JPEG, WebP, BMP or GIF", 415
                )
            factor = _reduction(img.size, min_side)
            if factor > 1 and img.format in ("JPEG", "MPO"):
                img.draft(img.mode, (img.width // factor, img.height // factor))
                factor = _reduction(img.size, min_side)  # what the DCT scaling left to do
            _check_pixels(img, max_pixels)
            img.seek(0)
            img.load()
            return _reduce(img, factor) if factor > 1 else img
    except BadInput:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as exc:
        raise BadInput(f"cannot decode the image ({exc.__class__.__name__})", 415) from None


def _reduction(size: tuple[int, int], min_side: int | None) -> int:
    """The whole factor that keeps the shorter side at least ``min_side`` (1: none)."""
    return max(1, min(size) // min_side) if min_side else 1


def _check_pixels(img: Any, max_pixels: int) -> None:
    if img.width * img.height > max_pixels:
        raise BadInput(
            f"the image is {img.width}x{img.height} once decoded; at most {max_pixels} pixels "
            "(IMGCLASS_MAX_IMAGE_PIXELS)",
            413,
        )


def _reduce(img: Any, factor: int) -> Any:
    """``img`` box-averaged by ``factor`` (EXIF and other info kept for orientation)."""
    if img.mode.startswith("I;16"):
        return img
    if img.mode in UNREDUCIBLE:
        transparent = "transparency" in img.info
        img = img.convert("RGBA" if transparent else "L" if img.mode == "1" else "RGB")
    info = dict(img.info)
    out = img.reduce(factor)
    out.info.update(info)
    return out


def decode_base64_image(text: str, max_pixels: int, min_side: int | None = None) -> Any:
    """A base64 string, or a data URL (``data:image/png;base64,...``), -> PIL image."""
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("image_base64 is not valid base64") from None
    return decode_image(data, max_pixels, min_side)


class Predictor:
    """One loaded bundle and how to feed it."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.bundle: Bundle = load_bundle(path, threads=threads)
        self.path = Path(path)
        # RUNDIR/bundle is served as RUNDIR's name, RUNDIR/bundle-int8 as "<name>-int8"
        base = self.path.name
        self.name = self.path.parent.name + base[6:] if base.startswith("bundle") else base
        self.version = self.bundle.model_json.get("model_sha256", "")[:12]
        # Big uploads are reduced while decoding to no less than this shorter side: well
        # above the model's input, so that a small drawing on a big page keeps its detail.
        self.decode_side = max(DECODE_MIN_SIDE, 4 * max(self.bundle.recipe["size"]))

    def warm_up(self) -> None:
        """Predict once through every path a request may take (a drawing; an image for
        image models), so the first person pays no import or start-up cost."""
        from PIL import Image

        drawing = [np.array([[10, 10], [120, 60]], np.float32), np.array([[30, 90]], np.float32)]
        self.predict_strokes(drawing, 1)
        if self.bundle.input_kind == "image":
            self.predict_image(Image.new("RGB", (64, 48), "white"), 1)

    def describe(self) -> dict[str, Any]:
        b = self.bundle
        return {
            "name": self.name,
            "version": self.version,
            "family": b.model_json.get("family"),
            "model": b.model_json.get("name"),
            "classes": b.labels,
            "input_kind": b.input_kind,
            "input": b.preprocess["input"],
            "recipe": b.recipe.get("name"),
            "metrics": {k: v for k, v in b.metrics.items() if k in ("test", "valid")},
            # int8 bundles: both models' accuracy and latency (None for float ones)
            "quantization": b.metrics.get("quantization"),
        }

    def _top(self, proba: np.ndarray, k: int) -> tuple[list[str], list[float]]:
        top = np.argsort(-proba)[:k]
        return [self.bundle.labels[i] for i in top], [round(float(proba[i]), 6) for i in top]

    def predict_image(self, img: Any, top_k: int) -> Prediction:
        from imgclass.data.preprocess import apply_recipe, prepare_raw_image

        t0 = time.perf_counter()
        arr = prepare_raw_image(img, self.bundle.recipe)
        x = apply_recipe(self.bundle.recipe, [arr])
        t1 = time.perf_counter()
        if self.bundle.input_kind == "sequence":
            raise BadInput(f"model {self.name} reads strokes, not images; send {{'strokes': ...}}")
        proba = self.bundle.predict_proba(x)[0]
        t2 = time.perf_counter()
        labels, probs = self._top(proba, top_k)
        timing = {"preprocess": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3}
        return Prediction(labels, probs, timing, x[0])

    def predict_strokes(self, drawing: list[np.ndarray], top_k: int) -> Prediction:
        """Image models see the drawing rendered exactly like their training bitmaps;
        sequence models see it as a stroke sequence."""
        t0 = time.perf_counter()
        x = None
        if self.bundle.input_kind == "sequence":
            proba = self.bundle.predict_drawings([drawing], raw=True)[0]
            t1 = t2 = time.perf_counter()
        else:
            x = self.render(drawing)
            t1 = time.perf_counter()
            proba = self.bundle.predict_proba(x)[0]
            t2 = time.perf_counter()
        labels, probs = self._top(proba, top_k)
        timing = {"preprocess": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3}
        return Prediction(labels, probs, timing, None if x is None else x[0])

    def render(self, drawing: list[np.ndarray]) -> np.ndarray:
        """Raw strokes -> the model's input image (1, H, W) uint8, as in training."""
        from imgclass.data.preprocess import apply_recipe
        from imgclass.data.render import render_strokes, simplify_raw

        size = self.bundle.preprocess["input"]["size"][0]
        return apply_recipe(
            self.bundle.recipe, render_strokes(simplify_raw(drawing), size=size)[None]
        )
