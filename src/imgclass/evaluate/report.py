"""The evaluation report: pictures, report.json and an index.html that ties them together.

The folder is written next to its destination and moved into place at the end, so a
failure never leaves half a report. index.html is self-contained (inline CSS, no
JavaScript, pictures referenced by relative paths) and readable in any browser.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from imgclass import atomic
from imgclass.bundle import Bundle
from imgclass.data.store import PreparedDataset
from imgclass.errors import ConfigError
from imgclass.evaluate import plots
from imgclass.evaluate.html import render_page
from imgclass.evaluate.metrics import calibration_bins, most_confused

log = logging.getLogger(__name__)

MISCLASSIFIED_SHOWN = 24
ACTIVATION_EXAMPLES = 4
CONFUSED_PAIRS = 20
CLOSEUP_CLASSES = 20


def active_classes(cm: np.ndarray) -> np.ndarray:
    """Indices of the classes that occur or are predicted (bool rows/columns of cm with
    any count): a 345-class model measured on 20 classes shows those, not 345."""
    counts = np.asarray(cm)
    return np.flatnonzero((counts.sum(axis=0) > 0) | (counts.sum(axis=1) > 0))


def most_confident_mistakes(y: np.ndarray, proba: np.ndarray, n: int) -> np.ndarray:
    """Indices of up to n misclassified examples, most confident first: int64 (<= n,)."""
    pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    order = np.argsort(-proba[wrong, pred[wrong]], kind="stable")
    return wrong[order[:n]]


def one_per_class(y: np.ndarray, n: int) -> np.ndarray:
    """n examples of different classes (each class's first, earliest classes first),
    int64 (<= n,): a deterministic handful of varied inputs."""
    _, first = np.unique(y, return_index=True)
    return np.sort(first)[:n]


def read_images(ds: PreparedDataset, split: str, index: np.ndarray) -> np.ndarray:
    """Images at ``index`` (any order) of a split, uint8 (len(index), H, W[, C])."""
    if not len(index):
        return np.zeros((0, *ds.image_shape), dtype=np.uint8)
    order = np.argsort(index)
    images = ds.images(split)[np.asarray(index)[order]]
    out = np.empty_like(images)
    out[order] = images
    return out


class ReportBuilder:
    """Collects the pictures and sections of one report in a folder being written."""

    def __init__(self, folder: Path, dpi: int = 110) -> None:
        self.folder = folder
        self.dpi = dpi
        self.figures: list[dict[str, str]] = []

    def add(self, name: str, title: str, caption: str, make: Callable[[], Any]) -> None:
        """Draw a figure with ``make()``, save it as ``name`` and record it for the page."""
        import matplotlib.pyplot as plt

        fig = make()
        try:
            fig.savefig(self.folder / name, dpi=self.dpi, bbox_inches="tight")
        finally:
            plt.close(fig)
        self.figures.append({"file": name, "title": title, "caption": caption})


def _confusion_figures(
    rb: ReportBuilder, cm: np.ndarray, labels: list[str], pairs: list[dict[str, Any]]
) -> None:
    shown = active_classes(cm)
    sub = cm[np.ix_(shown, shown)]
    names = [labels[i] for i in shown]
    involved = list(dict.fromkeys(n for p in pairs for n in (p["true"], p["predicted"])))
    rb.add(
        "confusion.png",
        "Confusion matrix",
        "Row-normalised: each row is a true class and sums to 1, so the diagonal is the "
        "recall. Above 30 classes the classes are reordered so that classes confused with "
        "each other sit together; the colour scale is a square root so rare confusions show.",
        lambda: plots.confusion_matrix(sub, names, highlight=involved),
    )
    if len(names) > plots.SMALL_MATRIX and involved:
        close = involved[:CLOSEUP_CLASSES]
        rb.add(
            "confusion_closeup.png",
            "Close-up of the most-confused classes",
            "The same matrix restricted to the classes of the most-confused pairs.",
            lambda: plots.confused_submatrix(cm, labels, close),
        )
    if pairs:
        rb.add(
            "confused_pairs.png",
            "Most-confused pairs",
            "How many examples of the true class went to the other; the label is the "
            "share of the true class.",
            lambda: plots.confused_pairs(pairs),
        )


def _misclassified_figure(
    rb: ReportBuilder, ds: PreparedDataset, split: str, labels: list[str], y: Any, proba: Any
) -> None:
    index = most_confident_mistakes(y, proba, MISCLASSIFIED_SHOWN)
    if not len(index):
        return
    pred = proba[index].argmax(axis=1)
    captions = [
        f"true: {labels[y[i]]} ({proba[i, y[i]]:.2f})\npred: {labels[p]} ({proba[i, p]:.2f})"
        for i, p in zip(index, pred, strict=True)
    ]
    wrong = int((proba.argmax(axis=1) != y).sum())
    rb.add(
        "misclassified.png",
        "Misclassified examples",
        f"The {len(index)} most confident of the {wrong} mistakes, as the model saw them "
        "(after the recipe), with the probabilities of the true and the predicted class.",
        lambda: plots.captioned_grid(
            read_images(ds, split, index), captions, "misclassified, most confident first"
        ),
    )


def _filter_figures(
    rb: ReportBuilder, bundle: Bundle, ds: PreparedDataset, split: str, y: Any
) -> None:
    """First-layer filters and their activation maps, for image models with a Conv."""
    import onnx

    from imgclass.evaluate.filters import activation_maps, first_conv, tensor_values

    if bundle.input_kind != "image" or bundle.preprocess["input"].get("layout") == "flat":
        return
    model = onnx.load_model_from_string((bundle.path / "model.onnx").read_bytes())
    conv = first_conv(model)
    if conv is None:
        log.info("%s has no convolution: no filter pictures", bundle.path)
        return
    rb.add(
        "filters.png",
        "First-layer filters",
        "The weights of the first convolution, read from model.onnx (red positive, blue "
        "negative, each filter scaled to its own range).",
        lambda: plots.conv_filters(conv.weight),
    )
    index = one_per_class(y, ACTIVATION_EXAMPLES)
    images = read_images(ds, split, index)
    feeds = {model.graph.input[0].name: bundle.to_input(images)}
    maps = activation_maps(tensor_values(model, feeds, conv.input_name), conv)
    captions = [bundle.labels[y[i]] for i in index]
    rb.add(
        "activations.png",
        "First-layer activation maps",
        "What the first filters respond to on a few test examples: the convolution "
        "recomputed from the ONNX weights, plus bias, then ReLU.",
        lambda: plots.activation_maps(images, maps, captions),
    )


def _write_folder(
    folder: Path,
    bundle: Bundle,
    ds: PreparedDataset,
    split: str,
    metrics: dict[str, Any],
    y: np.ndarray,
    proba: np.ndarray,
) -> None:
    cm = np.asarray(metrics["confusion"])
    pairs = most_confused(cm, bundle.labels, CONFUSED_PAIRS)
    calib = calibration_bins(y, proba)
    present = {c: v for c, v in metrics["per_class"].items() if v["support"] > 0}
    rb = ReportBuilder(folder)
    _confusion_figures(rb, cm, bundle.labels, pairs)
    _misclassified_figure(rb, ds, split, bundle.labels, y, proba)
    rb.add(
        "per_class_f1.png",
        "F1 per class",
        "F1 of each class present in the data, worst at the top.",
        lambda: plots.per_class_f1(present),
    )
    rb.add(
        "reliability.png",
        "Calibration",
        "Accuracy against the model's confidence (its top probability) in 15 bins: bars "
        "under the diagonal mean over-confidence. ECE is the count-weighted mean gap.",
        lambda: plots.reliability_diagram(calib, metrics["ece"]),
    )
    history = bundle.metrics.get("history") or []
    if history:
        rb.add(
            "training_curves.png",
            "Training curves",
            "Loss and accuracy per epoch on the training and validation splits, from "
            "the bundle's metrics.json.",
            lambda: plots.training_curves(history),
        )
    _filter_figures(rb, bundle, ds, split, y)
    summary = report_json(bundle, ds, split, metrics, pairs, calib, rb.figures)
    (folder / "report.json").write_text(json.dumps(summary, indent=1) + "\n")
    (folder / "index.html").write_text(render_page(summary, bundle))


def report_json(
    bundle: Bundle,
    ds: PreparedDataset,
    split: str,
    metrics: dict[str, Any],
    pairs: list[dict[str, Any]],
    calib: dict[str, np.ndarray],
    figures: list[dict[str, str]],
) -> dict[str, Any]:
    """Everything the report shows, as JSON: the metrics at the top level (as with
    ``imgclass evaluate --json``) plus model, data, pairs, calibration bins, pictures."""
    return {
        **metrics,
        "model": bundle.model_json.get("name"),
        "bundle": str(bundle.path),
        "data": str(ds.path),
        "split": split,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "most_confused": pairs,
        "calibration": {k: v.tolist() for k, v in calib.items()},
        "pictures": figures,
    }


def check_destination(out: str | Path) -> None:
    """ConfigError unless ``out`` is absent, an empty folder or an earlier report (call it
    before a long evaluation, so a bad --report fails at once)."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--report {out}: exists and is not a folder")
    if any(out.iterdir()) and not (out / "report.json").is_file():
        raise ConfigError(
            f"--report {out}: the folder holds other files; give a new or empty folder"
        )


def write_report(
    out: str | Path,
    bundle: Bundle,
    ds: PreparedDataset,
    split: str,
    metrics: dict[str, Any],
    y: np.ndarray,
    proba: np.ndarray,
) -> Path:
    """Write the report folder (replacing an earlier report there); returns index.html.

    metrics, y, proba: what ``imgclass.evaluate.run.evaluate`` returned for ``split``.
    """
    out = Path(out)
    check_destination(out)
    with atomic.folder(out) as tmp:
        _write_folder(tmp, bundle, ds, split, metrics, y, proba)
    return out / "index.html"
