"""Classification metrics from true labels and predicted probabilities (pure numpy).

Everything here takes ``y_true``: int array of shape (n,), class indices into
``classes``, and ``proba``: float array of shape (n, K), one column per class (rows
need not sum exactly to 1). Rankings break ties towards the lower class index, the
same way ``argmax`` does, so top-1 of the top-k lists is always the prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ECE_BINS = 15


def check_inputs(y_true: Any, proba: Any, n_classes: int | None = None) -> tuple[Any, Any]:
    """Validated copies: y_true int64 (n,), proba float64 (n, K).

    ValueError when the shapes disagree, a label is outside 0..K-1 or a probability
    is not finite.
    """
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 2 or len(y) != len(p):
        raise ValueError(f"expected y_true (n,) and proba (n, K); got {y.shape} and {p.shape}")
    if n_classes is not None and p.shape[1] != n_classes:
        raise ValueError(f"proba has {p.shape[1]} columns for {n_classes} classes")
    if y.size and y.dtype.kind not in "iu":
        raise ValueError(f"y_true must hold integer class indices, got {y.dtype}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"y_true holds class indices outside 0..{p.shape[1] - 1}")
    if not np.isfinite(p).all():
        raise ValueError("proba holds NaN or infinite values")
    return y, p


def top_k(proba: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k most probable classes, best first: int array (n, min(k, K))."""
    return np.argsort(-np.asarray(proba), axis=1, kind="stable")[:, :k]


def top_k_accuracy(y_true: Any, proba: Any, k: int) -> float:
    """Share of examples whose true class is among the k most probable (0.0 when n = 0)."""
    y, p = check_inputs(y_true, proba)
    if not len(y):
        return 0.0
    return float((top_k(p, k) == y[:, None]).any(axis=1).mean())


def map_at_k(y_true: Any, proba: Any, k: int = 3) -> float:
    """Mean average precision at k with one true class per example: 1/rank of the true
    class when it is among the first k guesses, else 0 (Kaggle's Quick, Draw! metric)."""
    y, p = check_inputs(y_true, proba)
    if not len(y):
        return 0.0
    hits = top_k(p, k) == y[:, None]
    ranks = np.arange(1, hits.shape[1] + 1)
    return float((hits / ranks).sum(axis=1).mean())


def map_at_3(y_true: Any, proba: Any) -> float:
    """MAP@3: 1, 1/2 or 1/3 when the true class is guessed first, second or third."""
    return map_at_k(y_true, proba, 3)


def confusion(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """Counts int64 (K, K): row = true class, column = predicted class."""
    y = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def precision_recall_f1(cm: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-class precision, recall, F1 (float (K,)) and support (int (K,)) from counts.

    A class never predicted has precision 0 and a class absent from y_true recall 0
    (scikit-learn's ``zero_division=0``); F1 is 0 where both are 0.
    """
    k = len(cm)
    tp = np.diag(cm).astype(np.float64)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    return precision, recall, f1, support


def calibration_bins(y_true: Any, proba: Any, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Reliability statistics over equal-width bins of the confidence (the top probability).

    Bin b holds confidences in (b/bins, (b+1)/bins], the first one also 0. Returns
    ``edges`` float (bins + 1,), and per bin ``count`` int (bins,), ``accuracy`` and
    ``confidence`` float (bins,) (the means over the bin; 0 for empty bins).
    """
    y, p = check_inputs(y_true, proba)
    conf = p.max(axis=1) if len(y) else np.zeros(0)
    correct = (p.argmax(axis=1) == y) if len(y) else np.zeros(0, dtype=bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    safe = np.maximum(count, 1)
    return {
        "edges": edges,
        "count": count,
        "accuracy": np.bincount(which, weights=correct, minlength=bins) / safe,
        "confidence": np.bincount(which, weights=conf, minlength=bins) / safe,
    }


def expected_calibration_error(y_true: Any, proba: Any, bins: int = ECE_BINS) -> float:
    """ECE: |accuracy - mean confidence| per confidence bin, weighted by the bin's share
    of the examples (Guo et al., 2017). 0 for a perfectly calibrated model."""
    stats = calibration_bins(y_true, proba, bins)
    total = stats["count"].sum()
    if not total:
        return 0.0
    gaps = np.abs(stats["accuracy"] - stats["confidence"])
    return float((stats["count"] * gaps).sum() / total)


def undo_temperature(proba: Any, temperature: float) -> np.ndarray:
    """The probabilities float64 (n, K) a model gave before its temperature was applied:
    softmax(T * log p), since calibrated p = softmax(logits / T). Lets ``evaluate`` report
    the ECE before calibration from the calibrated bundle alone."""
    logp = np.log(np.maximum(np.asarray(proba, np.float64), np.finfo(np.float64).tiny))
    z = temperature * logp
    z -= z.max(axis=1, keepdims=True) if len(z) else 0.0
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def most_confused(cm: Any, classes: list[str], top: int = 20) -> list[dict[str, Any]]:
    """The largest off-diagonal cells of a confusion matrix, most frequent first.

    Each pair is ``{"true", "predicted", "count", "rate"}``, where rate is the share
    of the true class's examples predicted as the other class. Ties in count go to the
    higher rate, then to the lower (true, predicted) indices.
    """
    counts = np.asarray(cm, dtype=np.int64)
    support = counts.sum(axis=1)
    off = counts.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off)
    rates = off[rows, cols] / support[rows]
    order = np.lexsort((cols, rows, -rates, -off[rows, cols]))[:top]
    return [
        {
            "true": classes[rows[i]],
            "predicted": classes[cols[i]],
            "count": int(off[rows[i], cols[i]]),
            "rate": float(rates[i]),
        }
        for i in order
    ]


def compute_metrics(
    y_true: Any,
    proba: Any,
    classes: list[str],
    bins: int = ECE_BINS,
    *,
    temperature: float | None = None,
) -> dict[str, Any]:
    """Every summary number of a classifier on one labelled set.

    y_true: int array (n,), indices into ``classes``; proba: float array (n, K) with
    K = len(classes). Returns ``n``, ``accuracy``, ``top3_accuracy``, ``map3``,
    ``macro_f1`` (the mean F1 over the classes present in y_true, so a model can be
    measured on a dataset holding a subset of its classes), ``ece`` (``bins`` bins),
    ``per_class`` {name: {precision, recall, f1, support}} for all K classes and
    ``confusion`` (K x K counts as lists, row = true class). With the ``temperature`` a
    calibrated model applies (its probabilities being softmax(logits / T)), also that
    ``temperature`` and ``ece_uncalibrated``, the ECE of its probabilities before it.
    """
    y, p = check_inputs(y_true, proba, len(classes))
    pred = p.argmax(axis=1) if len(y) else np.zeros(0, dtype=np.int64)
    cm = confusion(y, pred, len(classes))
    precision, recall, f1, support = precision_recall_f1(cm)
    present = support > 0
    calibration = {}
    if temperature is not None:
        raw = undo_temperature(p, temperature)
        calibration = {
            "temperature": float(temperature),
            "ece_uncalibrated": expected_calibration_error(y, raw, bins),
        }
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else 0.0,
        "top3_accuracy": top_k_accuracy(y, p, 3),
        "map3": map_at_3(y, p),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "ece": expected_calibration_error(y, p, bins),
        **calibration,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion": cm.tolist(),
    }
