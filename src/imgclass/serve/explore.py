"""The model's own held-out data, for the page's Explore and Model views.

Opened lazily from the dataset path recorded in the bundle; predictions on the test
split are computed once and cached. A server without that dataset still serves
predictions; these views then answer 404 with the reason.
"""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np

from imgclass.serve.predictor import BadInput, Predictor


def png_base64(image: np.ndarray, size: int = 112) -> str:
    from PIL import Image

    img = Image.fromarray(image)
    img = img.resize((size, size), Image.Resampling.NEAREST) if img.width < size else img
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class HeldOut:
    """Test-split images, true labels and the model's probabilities for one predictor."""

    def __init__(self, predictor: Predictor, split: str = "test") -> None:
        self.predictor = predictor
        self.split = split
        self.lock = threading.Lock()
        self._loaded: tuple[Any, np.ndarray, np.ndarray] | None = None

    def _load(self) -> tuple[Any, np.ndarray, np.ndarray]:
        from imgclass.data.store import PreparedDataset
        from imgclass.errors import ImgclassError
        from imgclass.evaluate.run import evaluate

        with self.lock:
            if self._loaded is None:
                path = self.predictor.bundle.model_json.get("dataset", {}).get("path")
                if not path or not Path(path).exists():
                    raise BadInput(
                        f"the dataset this model was trained on ({path}) is not on this server", 404
                    )
                try:
                    ds = PreparedDataset.open(path)
                    if self.split not in ds.splits:
                        raise BadInput(f"the dataset has no {self.split} split", 404)
                    _, y, proba = evaluate(self.predictor.bundle, ds, self.split)
                except ImgclassError as exc:
                    raise BadInput(str(exc), 404) from None
                self._loaded = (ds, y, proba)
            return self._loaded

    def random_example(self, seed: int | None = None) -> dict[str, Any]:
        ds, y, proba = self._load()
        i = int(np.random.default_rng(seed).integers(len(y)))
        return self._example(ds, y, proba, i, top=2)

    def _example(
        self, ds: Any, y: np.ndarray, proba: np.ndarray, i: int, top: int
    ) -> dict[str, Any]:
        labels = self.predictor.bundle.labels
        order = np.argsort(-proba[i])[:top]
        return {
            "index": i,
            "label": labels[int(y[i])],
            "image": png_base64(ds.images(self.split)[i]),
            "predictions": [{"label": labels[k], "probability": float(proba[i, k])} for k in order],
        }

    def report(self) -> dict[str, Any]:
        from imgclass.evaluate.metrics import compute_metrics

        _, y, proba = self._load()
        bundle = self.predictor.bundle
        metrics = compute_metrics(y, proba, bundle.labels, temperature=bundle.temperature)
        return {"split": self.split, **metrics}

    def cell(self, true: str, predicted: str, limit: int) -> list[dict[str, Any]]:
        ds, y, proba = self._load()
        labels = self.predictor.bundle.labels
        if true not in labels or predicted not in labels:
            raise BadInput(f"unknown class {true if true not in labels else predicted!r}", 404)
        hits = np.flatnonzero(
            (y == labels.index(true)) & (proba.argmax(axis=1) == labels.index(predicted))
        )
        return [self._example(ds, y, proba, int(i), top=2) for i in hits[:limit]]
