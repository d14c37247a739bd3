"""Classification metrics from true labels and predicted probabilities (pure numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np


def top_k_accuracy(y: np.ndarray, proba: np.ndarray, k: int) -> float:
    top = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return float((top == y[:, None]).any(axis=1).mean()) if len(y) else 0.0


def map_at_3(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean average precision at 3 (Kaggle's Quick, Draw! metric): 1, 1/2 or 1/3 by rank."""
    top = np.argsort(-proba, axis=1, kind="stable")[:, :3]
    hits = top == y[:, None]
    return float((hits / np.arange(1, 4)).sum(axis=1).mean()) if len(y) else 0.0


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, bins: int = 15) -> float:
    """ECE: |accuracy - confidence| averaged over equal-width confidence bins, by count."""
    conf = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """Counts (k, k): row = true class, column = predicted class."""
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k)


def compute_metrics(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """accuracy, top-3, MAP@3, macro F1, ECE, n, per-class precision/recall/F1 and the
    confusion matrix. Classes never predicted (or absent) get precision (recall) 0."""
    y = np.asarray(y, dtype=np.int64)
    k = len(classes)
    pred = proba.argmax(axis=1)
    cm = confusion(y, pred, k)
    tp = np.diag(cm).astype(float)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    present = support > 0
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else 0.0,
        "top3_accuracy": top_k_accuracy(y, proba, 3),
        "map3": map_at_3(y, proba),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "ece": expected_calibration_error(y, proba),
        "per_class": {
            c: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion": cm.tolist(),
    }
