"""Report pictures (matplotlib, Agg) and the HTML page that shows them."""

from __future__ import annotations

import html
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix(cm: np.ndarray, labels: list[str]) -> Any:
    """Row-normalised confusion matrix; numbers in the cells only when they fit."""
    plt = _plt()
    k = len(labels)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = min(24, 3 + 0.35 * k)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fontsize = max(3, min(9, 400 / max(k, 1)))
    ax.set_xticks(range(k), labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(k), labels, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        for i, j in zip(*np.nonzero(cm), strict=True):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=fontsize - 1,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_title("confusion matrix (each row sums to 1)")
    return fig


def misclassified_grid(
    images: Any, y: np.ndarray, proba: np.ndarray, labels: list[str], n: int = 24
) -> Any:
    """The most confident mistakes, with true and predicted labels."""
    plt = _plt()
    pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-proba[wrong, pred[wrong]])][:n]
    cols = 6
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.8, rows * 2.1), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    picked = images[np.sort(wrong)] if len(wrong) else []
    order = {int(i): k for k, i in enumerate(np.sort(wrong))}
    for ax, i in zip(axes.ravel(), wrong, strict=False):
        img = picked[order[int(i)]]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax.set_title(
            f"true {labels[y[i]]}\npred {labels[pred[i]]} {proba[i, pred[i]]:.2f}", fontsize=7
        )
    fig.suptitle(f"{len(np.flatnonzero(pred != y))} misclassified; the most confident shown")
    return fig


def per_class_f1(per_class: dict[str, dict[str, float]]) -> Any:
    plt = _plt()
    items = sorted(per_class.items(), key=lambda kv: kv[1]["f1"])
    fig, ax = plt.subplots(figsize=(6, max(3, 0.18 * len(items))))
    ax.barh([k for k, _ in items], [v["f1"] for _, v in items], color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    ax.tick_params(axis="y", labelsize=max(3, min(8, 500 / max(len(items), 1))))
    ax.set_title("per-class F1 (worst at the bottom)")
    return fig


def training_curves(history: list[dict[str, float]]) -> Any:
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(epochs, [h["train_loss"] for h in history], label="train")
    b.plot(epochs, [h["train_accuracy"] for h in history], label="train")
    if "val_loss" in history[0]:
        a.plot(epochs, [h["val_loss"] for h in history], label="valid")
        b.plot(epochs, [h["val_accuracy"] for h in history], label="valid")
    a.set_title("loss")
    b.set_title("accuracy")
    for ax in (a, b):
        ax.set_xlabel("epoch")
        ax.legend()
    return fig


def html_report(bundle: Any, metrics: dict[str, Any], pictures: list[str], split: str) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{v['precision']:.3f}</td><td>{v['recall']:.3f}</td>"
        f"<td>{v['f1']:.3f}</td><td>{v['support']}</td></tr>"
        for c, v in metrics["per_class"].items()
    )
    summary = "".join(
        f"<li>{k}: {metrics[k]:.4f}</li>"
        for k in ("accuracy", "top3_accuracy", "map3", "macro_f1", "ece")
    )
    images = "".join(
        f'<h2>{p[:-4].replace("_", " ")}</h2><img src="{p}" style="max-width:100%">'
        for p in pictures
    )
    name = html.escape(str(bundle.model_json.get("name")))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{name} report</title></head>"
        f"<body style='font-family:sans-serif;max-width:1100px;margin:auto'>"
        f"<h1>{name} on the {split} split ({metrics['n']} examples)</h1><ul>{summary}</ul>{images}"
        f"<h2>per class</h2><table border=1 cellpadding=3><tr><th>class</th><th>precision</th>"
        f"<th>recall</th><th>F1</th><th>support</th></tr>{rows}</table></body></html>"
    )
