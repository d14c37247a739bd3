"""Temperature scaling: calibrated probabilities from a trained model's ONNX graph.

A network trained to low cross-entropy is usually over-confident on new data (its top
probability is higher than its accuracy). Dividing the logits by one temperature T > 1
fitted on held-out data fixes most of that without changing any prediction's ranking
(Guo et al., "On Calibration of Modern Neural Networks", 2017). T is fitted on the
validation split (or the examples held out of the training split), minimising the
negative log-likelihood; it is applied inside the exported graph
(``onnx_export.apply_temperature``), so whatever runs model.onnx gets calibrated
probabilities, and recorded in the bundle's model.json (``calibration``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclass.evaluate.metrics import expected_calibration_error

if TYPE_CHECKING:
    from imgclass.data.store import PreparedDataset
    from imgclass.models.registry import ModelInfo
    from imgclass.train.config import TrainConfig

log = logging.getLogger(__name__)

BOUNDS = (0.05, 20.0)  # temperatures outside these mean a broken model, not a calibration
MAX_EXAMPLES = 20_000  # validation examples the fit uses at most (chosen at random)
MAX_BYTES = 256 << 20  # and no more than this much of their images in memory
BATCH = 512


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of float64 (n, K) logits, stable for large values."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    out: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, float64 (n, K)."""
    out: np.ndarray = np.exp(log_softmax(np.asarray(logits, np.float64)))
    return out


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` (n,) under softmax(logits / T)."""
    z = np.asarray(logits, np.float64) / temperature
    return float(-log_softmax(z)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T in ``BOUNDS`` minimising the NLL of softmax(logits / T).

    logits: float (n, K); labels: int (n,). The NLL is convex in 1/T, so a bounded
    one-dimensional search over log T finds the global minimum. ValueError when
    there are no examples.
    """
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, np.int64)
    if not len(labels):
        raise ValueError("fitting a temperature needs at least one example")
    z = np.asarray(logits, np.float64)
    lo, hi = np.log(BOUNDS)
    result = minimize_scalar(
        lambda log_t: nll(z, labels, float(np.exp(log_t))),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return max(float(np.exp(result.x)), least_temperature(z, labels))


def mean_confidence(logits: np.ndarray, temperature: float) -> float:
    """Mean top probability of softmax(logits / T): falls as T grows."""
    return float(softmax(logits / temperature).max(axis=1).mean())


def least_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The smallest T whose mean confidence is no more than the accuracy the examples
    support, (right + 1) / (n + 2) (Laplace's rule of succession).

    Why: when the model gets every validation example right (a photo model on 120
    photos), the NLL keeps falling as T goes to 0 and the fit ends on the lower bound,
    promising near-certainty that 120 examples cannot show. Elsewhere the NLL's own T
    gives a mean confidence close to the accuracy, and this floor does not bind.
    """
    right = int((logits.argmax(axis=1) == labels).sum())
    supported = (right + 1) / (len(labels) + 2)
    lo, hi = np.log(BOUNDS)
    if mean_confidence(logits, float(np.exp(lo))) <= supported:
        return float(np.exp(lo))
    for _ in range(40):  # bisection on log T: mean confidence is monotone in T
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_confidence(logits, float(np.exp(mid))) > supported else (lo, mid)
    t = float(np.exp(hi))
    log.info("calibration: temperature kept >= %.3f (the accuracy %d/%d examples support)",
             t, right, len(labels))  # fmt: skip
    return t


# --- the graph's logits on the validation data ------------------------------------------


def onnx_logits(
    onnx_bytes: bytes,
    inputs: tuple[np.ndarray, ...],
    to_input: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """The graph's logits float32 (n, K) for its inputs (images, or sequences (n, T, F)
    and lengths (n,)), run in batches through ONNX Runtime; ``to_input`` turns each
    batch of the first array into what the graph takes (uint8 images into floats)."""
    from imgclass.bundle import onnx_session
    from imgclass.onnx_export import logits_name, with_logits_output

    session = onnx_session(with_logits_output(onnx_bytes), threads=0)
    name = logits_name(onnx_bytes)
    feeds = ["input", "lengths"][: len(inputs)]
    parts = []
    for start in range(0, len(inputs[0]), BATCH):
        batch = {k: v[start : start + BATCH] for k, v in zip(feeds, inputs, strict=True)}
        first = batch["input"] if to_input is None else to_input(batch["input"])
        batch["input"] = np.asarray(first, np.float32)
        if "lengths" in batch:
            batch["lengths"] = batch["lengths"].astype(np.int64)
        parts.append(session.run([name], batch)[0])
    return np.concatenate(parts)


def calibrate_graph(
    onnx_bytes: bytes,
    inputs: tuple[np.ndarray, ...],
    labels: np.ndarray,
    source: str,
    to_input: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Fit T on (inputs, labels) and return (the graph with T applied, what model.json's
    ``calibration`` records: T, where and on how many examples it was fitted, and the
    NLL and ECE there before and after)."""
    from imgclass.onnx_export import apply_temperature

    logits = onnx_logits(onnx_bytes, inputs, to_input).astype(np.float64)
    t = fit_temperature(logits, labels)
    before, after = softmax(logits), softmax(logits / t)
    summary = {
        "method": "temperature",
        "temperature": t,
        "fitted_on": source,
        "n": len(labels),
        "nll_before": nll(logits, labels),
        "nll_after": nll(logits, labels, t),
        "ece_before": expected_calibration_error(labels, before),
        "ece_after": expected_calibration_error(labels, after),
    }
    log.info(
        "calibration: temperature %.3f fitted on %d %s examples (ECE %.4f -> %.4f)",
        t,
        len(labels),
        source,
        summary["ece_before"],
        summary["ece_after"],
    )
    return apply_temperature(onnx_bytes, t), summary


def uncalibrated(reason: str) -> dict[str, Any]:
    """model.json's ``calibration`` when no temperature could be fitted (T = 1)."""
    log.info("calibration: none (%s); probabilities are the model's own (temperature 1)", reason)
    return {"method": "none", "temperature": 1.0, "reason": reason}


def subsample(n: int, seed: int, example_bytes: int = 1) -> np.ndarray:
    """Sorted indices of at most ``MAX_EXAMPLES`` of ``n`` examples (fewer for big images:
    ``MAX_BYTES`` of them at most), chosen by ``seed``."""
    limit = max(1, min(MAX_EXAMPLES, MAX_BYTES // max(1, example_bytes)))
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


# --- after ``imgclass train`` -------------------------------------------------------


def validation_set(ds: PreparedDataset, cfg: TrainConfig) -> tuple[str, np.ndarray, str] | None:
    """(split, indices, "valid" | "holdout") of the examples the run validated on: the
    valid split, else those ``val_fraction`` held out of the training split (at most
    ``MAX_EXAMPLES``); None when there are neither."""
    from imgclass.train.run import holdout, train_count

    size = int(np.prod(ds.image_shape))
    held = holdout(ds, cfg, train_count(ds, cfg))
    if held is not None:
        return "train", held[subsample(len(held), cfg.seed, size)], "holdout"
    if "valid" in ds.splits:
        return "valid", subsample(ds.size("valid"), cfg.seed, size), "valid"
    return None


def flat_input(images: np.ndarray) -> np.ndarray:
    """uint8 images (n, ...) -> float32 (n, F) in [0, 1], as scikit-learn families take them."""
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255)


def calibrate(
    onnx_bytes: bytes, ds: PreparedDataset, cfg: TrainConfig, info: ModelInfo
) -> tuple[bytes, dict[str, Any]]:
    """The trained graph with a temperature fitted on the run's validation examples, and
    model.json's ``calibration``; the graph unchanged (T = 1) when there are none."""
    from imgclass.train.run import encode_split, images_to_input

    found = validation_set(ds, cfg)
    if found is None:
        return onnx_bytes, uncalibrated("no validation split and val_fraction is 0")
    split, pick, source = found
    labels = np.asarray(ds.labels(split))[pick].astype(np.int64)
    if info.input_kind == "sequence":
        seqs, lengths = encode_split(ds, split, cfg, int(pick.max()) + 1)
        return calibrate_graph(onnx_bytes, (seqs[pick], lengths[pick]), labels, source)
    images = np.asarray(ds.images(split)[pick])
    to_input = flat_input if info.framework == "sklearn" else images_to_input
    return calibrate_graph(onnx_bytes, (images,), labels, source, to_input)
