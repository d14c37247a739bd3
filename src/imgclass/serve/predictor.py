"""Turns request payloads into model inputs with the bundle's own recipe, and times it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgclass.bundle import Bundle, load_bundle
from imgclass.data.decode import decode_image as decode_image  # re-exported for the routes
from imgclass.data.decode import decode_pixels as decode_pixels
from imgclass.errors import BadInput as BadInput  # re-exported for the routes
from imgclass.serve.browser import browser_info
from imgclass.serve.inputs import parse_strokes as parse_strokes  # where routes found it


@dataclass
class Prediction:
    labels: list[str]
    probabilities: list[float]
    timing_ms: dict[str, float] = field(default_factory=dict)
    model_input: np.ndarray | None = None  # the image the model saw (H, W[, C]), if one


def decode_base64_image(text: str, max_pixels: int, min_side: int | None = None) -> Any:
    """A base64 string, or a data URL (``data:image/png;base64,...``), -> the decoded
    image (``decode_pixels``: a PIL image, or a uint8 array for a plain PNG)."""
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("image_base64 is not valid base64") from None
    return decode_pixels(data, max_pixels, min_side)


class Predictor:
    """One loaded bundle and how to feed it."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.bundle: Bundle = load_bundle(path, threads=threads)
        self.path = Path(path)
        # RUNDIR/bundle is served as RUNDIR's name, RUNDIR/bundle-int8 as "<name>-int8"
        base = self.path.name
        self.name = self.path.parent.name + base[6:] if base.startswith("bundle") else base
        self.version = self.bundle.model_json.get("model_sha256", "")[:12]
        # Big uploads are reduced while decoding to no less than this shorter side
        self.decode_side = self.bundle.decode_side
        self._model_bytes: bytes | None = None
        self._model_size = (self.path / "model.onnx").stat().st_size

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
            # what the page needs to run the model itself (serve/browser.py)
            "browser": browser_info(self.name, b, self._model_size),
            # the temperature model.onnx applies (None for bundles made before calibration)
            "calibration": b.model_json.get("calibration"),
            **self.provenance(),
        }

    def provenance(self) -> dict[str, Any]:
        """What a person can read instead of a hash: when the model was trained, on which
        dataset (its folder's name), and whether it reads drawings or photos (a 3-channel
        recipe is the photo path; grayscale recipes and stroke models read drawings)."""
        b = self.bundle
        dataset = str((b.model_json.get("dataset") or {}).get("path") or "")
        return {
            "trained": str(b.model_json.get("created") or "")[:10] or None,
            "trained_on": Path(dataset).name or None,
            "reads": "photos" if b.recipe.get("channels") == 3 else "drawings",
        }

    def model_bytes(self) -> bytes:
        """model.onnx for the page to download, read on first use and kept; refused (409)
        if the file no longer matches the sha256 the loaded model was checked against."""
        if self._model_bytes is None:
            data = (self.path / "model.onnx").read_bytes()
            if hashlib.sha256(data).hexdigest() != self.bundle.model_json.get("model_sha256"):
                raise BadInput(
                    f"model {self.name}: model.onnx changed on disk since it was loaded", 409
                )
            self._model_bytes = data
        return self._model_bytes

    def _top(self, proba: np.ndarray, k: int) -> tuple[list[str], list[float]]:
        top = np.argsort(-proba)[:k]
        return [self.bundle.labels[i] for i in top], [round(float(proba[i]), 6) for i in top]

    def predict_image(self, img: Any, top_k: int) -> Prediction:
        """A decoded image (a PIL image or a uint8 array (h, w[, 3|4]) RGB(A), as
        ``decode_pixels`` gives) through the bundle's one path (``Bundle.model_input``)."""
        t0 = time.perf_counter()
        x = self.bundle.model_input([img])
        t1 = time.perf_counter()
        if self.bundle.input_kind == "sequence":
            raise BadInput(f"model {self.name} reads strokes, not images; send {{'strokes': ...}}")
        proba = self.bundle.predict_proba(x)[0]
        t2 = time.perf_counter()
        labels, probs = self._top(proba, top_k)
        timing = {"preprocess": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3}
        return Prediction(labels, probs, timing, x[0])

    def predict_strokes(self, drawing: list[np.ndarray], top_k: int) -> Prediction:
        """Image models see the drawing rendered exactly like their training bitmaps
        (``Bundle.model_input``); sequence models see it as a stroke sequence. Strokes
        already in Quick, Draw!'s simplified form are not simplified again."""
        t0 = time.perf_counter()
        x = None
        if self.bundle.input_kind == "sequence":
            proba = self.bundle.predict_drawings([drawing], raw=None)[0]
            t1 = t2 = time.perf_counter()
        else:
            x = self.bundle.model_input([drawing])
            t1 = time.perf_counter()
            proba = self.bundle.predict_proba(x)[0]
            t2 = time.perf_counter()
        labels, probs = self._top(proba, top_k)
        timing = {"preprocess": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3}
        return Prediction(labels, probs, timing, None if x is None else x[0])
