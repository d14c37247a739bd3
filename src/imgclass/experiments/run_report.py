"""The pictures a tracked training run records: a compact evaluation report.

``imgclass evaluate --report`` draws everything (first-layer filters, activation maps,
mistakes); that takes seconds a tracked run should not spend on every training, so a
run gets the pictures people compare runs by: the confusion matrix, F1 per class and
the training curves, with report.json and index.html as the full report has them (a
later ``imgclass evaluate --report RUNDIR/report`` replaces the folder with the full one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from imgclass import atomic
from imgclass.evaluate.report import ReportBuilder, active_classes


def draw_pictures(
    rb: ReportBuilder, labels: list[str], metrics: dict[str, Any], history: Any
) -> None:
    """confusion.png, per_class_f1.png and (torch runs) training_curves.png into ``rb``."""
    from imgclass.evaluate import plots

    cm = np.asarray(metrics["confusion"])
    shown = active_classes(cm)
    names = [labels[i] for i in shown]
    rb.add(
        "confusion.png",
        "Confusion matrix",
        "Row-normalised: each row is a true class and sums to 1, so the diagonal is the recall.",
        lambda: plots.confusion_matrix(cm[np.ix_(shown, shown)], names),
    )
    present = {c: v for c, v in metrics["per_class"].items() if v["support"] > 0}
    rb.add(
        "per_class_f1.png",
        "F1 per class",
        "F1 of each class present in the data, worst at the top.",
        lambda: plots.per_class_f1(present),
    )
    if history:
        rb.add(
            "training_curves.png",
            "Training curves",
            "Loss and accuracy per epoch on the training and validation splits.",
            lambda: plots.training_curves(history),
        )


def write_run_report(out: Path, bundle_dir: Path, data_dir: Path) -> Path | None:
    """Measure the bundle on the test split (valid when there is none) of ``data_dir``
    and write the compact report to ``out`` (replacing an earlier one, atomically).
    Returns ``out``, or None when the dataset has neither split."""
    from imgclass.bundle import load_bundle
    from imgclass.data.store import PreparedDataset
    from imgclass.evaluate.html import render_page
    from imgclass.evaluate.metrics import calibration_bins, most_confused
    from imgclass.evaluate.report import report_json
    from imgclass.evaluate.run import evaluate

    bundle = load_bundle(bundle_dir, threads=0)
    with PreparedDataset.open(data_dir) as ds:
        split = next((s for s in ("test", "valid") if s in ds.splits), None)
        if split is None:
            return None
        metrics, y, proba = evaluate(bundle, ds, split)
        with atomic.folder(out) as tmp:
            rb = ReportBuilder(tmp)
            draw_pictures(rb, bundle.labels, metrics, bundle.metrics.get("history"))
            pairs = most_confused(np.asarray(metrics["confusion"]), bundle.labels)
            summary = report_json(
                bundle, ds, split, metrics, pairs, calibration_bins(y, proba), rb.figures
            )
            (tmp / "report.json").write_text(json.dumps(summary, indent=1) + "\n")
            (tmp / "index.html").write_text(render_page(summary, bundle))
    return out
