"""Evaluate a bundle on a prepared dataset, matching classes by name.

The bundle's ONNX model gives probabilities over its own labels; the dataset's labels
are mapped into that label space by name, so a bundle can be measured on any prepared
dataset whose classes it knows, in any order, including one holding only some of its
classes (predicting a class the dataset lacks then counts as a mistake, as it would
in use). Only numpy and ONNX Runtime run here, never torch.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from imgclass.bundle import Bundle
from imgclass.data.store import BatchPlan, PreparedDataset
from imgclass.errors import ConfigError, DatasetError
from imgclass.evaluate.metrics import compute_metrics
from imgclass.progress import progress

log = logging.getLogger(__name__)


def class_mapping(labels: list[str], classes: list[str], where: object = "the dataset") -> Any:
    """Index in ``labels`` (the bundle's) of each of ``classes`` (the dataset's): int64 (k,).

    ConfigError naming the classes the model does not know.
    """
    position = {name: i for i, name in enumerate(labels)}
    unknown = [c for c in classes if c not in position]
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:8])
        more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        raise ConfigError(
            f"{where} has class(es) {shown}{more} that the model does not know; it was "
            f"trained on {len(labels)} classes ({', '.join(labels[:8])}"
            f"{', ...' if len(labels) > 8 else ''})"
        )
    return np.array([position[c] for c in classes], dtype=np.int64)


def check_compatible(bundle: Bundle, ds: PreparedDataset, split: str) -> None:
    """ConfigError/DatasetError when the dataset cannot feed this model; a warning when
    it was prepared with another recipe (the images then differ from the training ones)."""
    if split not in ds.splits:
        have = ", ".join(ds.splits) or "none"
        raise DatasetError(f"{ds.path} has no examples in the {split!r} split (it has {have})")
    spec = bundle.preprocess["input"]
    if bundle.input_kind == "sequence":
        if not ds.has_strokes:
            raise DatasetError(
                f"{bundle.path} is a stroke model but {ds.path} holds no strokes; prepare "
                "the dataset from ndjson, .bin or sketch-rnn files"
            )
        return
    size = [int(v) for v in spec.get("size", ds.image_shape[:2])]
    channels = int(spec.get("channels", 1))
    stored = 1 if len(ds.image_shape) == 2 else int(ds.image_shape[2])
    if list(ds.image_shape[:2]) != size or stored != channels:
        raise ConfigError(
            f"the model takes {size[0]}x{size[1]} images with {channels} channel(s) but "
            f"{ds.path} holds {'x'.join(map(str, ds.image_shape))}; prepare the data with "
            f"the model's recipe ({bundle.recipe.get('name')!r})"
        )
    if _recipe_core(ds.recipe) != _recipe_core(bundle.recipe):
        log.warning(
            "%s was prepared with the recipe %r, the model with %r: the images may not look "
            "like the ones it learned from",
            ds.path,
            ds.recipe.get("name"),
            bundle.recipe.get("name"),
        )


def _recipe_core(recipe: dict[str, Any]) -> tuple[str, str]:
    """What decides the images' look (steps and size), not the recipe's name or doc."""
    import json

    return json.dumps(recipe.get("steps"), sort_keys=True), str(recipe.get("size"))


def predict_split(
    bundle: Bundle, ds: PreparedDataset, split: str = "test", batch_size: int = 512
) -> np.ndarray:
    """The bundle's probabilities float32 (n, K) for every example of a split, in the
    split's order, read in batches (images) or from the stored strokes (sequence models)."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    n = ds.size(split)
    proba = np.zeros((n, len(bundle.labels)), dtype=np.float32)
    with progress(total=n, desc=f"evaluating {split}", unit=" ex") as bar:
        if bundle.input_kind == "sequence":
            drawings = ds.all_strokes(split)
            raw = ds.manifest.get("stroke_kind") == "raw"
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                proba[start:stop] = bundle.predict_drawings(drawings[start:stop], raw=raw)
                bar.update(stop - start)
        else:
            for images, _, index in ds.iter_batches(split, BatchPlan(batch_size, shuffle=False)):
                proba[index] = bundle.predict_proba(images, batch_size=batch_size)
                bar.update(len(index))
    return proba


def evaluate(
    bundle: Bundle, ds: PreparedDataset, split: str = "test", batch_size: int = 512
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Measure a bundle on one split of a prepared dataset.

    Returns (metrics as ``compute_metrics`` gives them over the bundle's labels, the
    true labels int64 (n,) as indices into ``bundle.labels``, the probabilities float32
    (n, K) in the bundle's column order).
    """
    check_compatible(bundle, ds, split)
    y = class_mapping(bundle.labels, ds.classes, ds.path)[ds.labels(split)]
    proba = predict_split(bundle, ds, split, batch_size)
    return compute_metrics(y, proba, bundle.labels, temperature=bundle.temperature), y, proba
