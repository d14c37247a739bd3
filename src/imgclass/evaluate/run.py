"""Evaluate a bundle on a prepared dataset, matching classes by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from imgclass.bundle import Bundle
from imgclass.data.store import PreparedDataset
from imgclass.errors import ConfigError
from imgclass.evaluate.metrics import compute_metrics
from imgclass.progress import progress


def class_mapping(bundle: Bundle, ds: PreparedDataset) -> np.ndarray:
    """Index in the bundle's labels of each dataset class; unknown classes are an error."""
    unknown = [c for c in ds.classes if c not in bundle.labels]
    if unknown:
        raise ConfigError(f"the model does not know the class(es) {unknown[:5]} of {ds.path}")
    return np.array([bundle.labels.index(c) for c in ds.classes], dtype=np.int64)


def check_shape(bundle: Bundle, ds: PreparedDataset) -> None:
    size = list(bundle.preprocess["input"]["size"])
    if list(ds.image_shape[:2]) != size:
        raise ConfigError(
            f"the model takes {size} images but {ds.path} holds {list(ds.image_shape)}"
        )


def evaluate(
    bundle: Bundle, ds: PreparedDataset, split: str = "test", batch_size: int = 1024
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(metrics, true labels in the bundle's label space, probabilities)."""
    check_shape(bundle, ds)
    mapping = class_mapping(bundle, ds)
    y = mapping[ds.labels(split)]
    source = _batches_for(bundle, ds, split)
    parts = []
    with progress(total=len(y), desc=f"evaluating {split}", unit=" ex") as bar:
        for start in range(0, len(y), batch_size):
            parts.append(source(start, start + batch_size))
            bar.update(len(parts[-1]))
    proba = np.concatenate(parts) if parts else np.zeros((0, len(bundle.labels)), np.float32)
    return compute_metrics(y, proba, bundle.labels), y, proba


def _batches_for(bundle: Bundle, ds: PreparedDataset, split: str) -> Any:
    """A function (start, stop) -> probabilities, for image or sequence bundles."""
    if bundle.input_kind == "sequence":
        drawings = ds.all_strokes(split)
        raw = ds.manifest.get("stroke_kind") == "raw"

        def from_strokes(a: int, b: int) -> np.ndarray:
            return bundle.predict_drawings(drawings[a:b], raw=raw)

        return from_strokes
    images = ds.images(split)

    def from_images(a: int, b: int) -> np.ndarray:
        return bundle.predict_proba(images[a:b])

    return from_images


def write_report(
    out: str | Path,
    bundle: Bundle,
    ds: PreparedDataset,
    split: str,
    metrics: dict[str, Any],
    y: np.ndarray,
    proba: np.ndarray,
) -> Path:
    """A folder with pictures and an index.html that ties them together."""
    import json

    from imgclass.evaluate import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pictures = {
        "confusion.png": plots.confusion_matrix(np.array(metrics["confusion"]), bundle.labels),
        "misclassified.png": plots.misclassified_grid(ds.images(split), y, proba, bundle.labels),
        "per_class_f1.png": plots.per_class_f1(metrics["per_class"]),
    }
    history = bundle.metrics.get("history") or []
    if history:
        pictures["training_curves.png"] = plots.training_curves(history)
    for name, fig in pictures.items():
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
    (out / "report.json").write_text(json.dumps(metrics))
    (out / "index.html").write_text(plots.html_report(bundle, metrics, list(pictures), split))
    return out / "index.html"
