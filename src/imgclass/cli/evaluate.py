"""``imgclass evaluate BUNDLE --data DIR``: how good a bundle is, in numbers and pictures."""

from __future__ import annotations

import argparse
import json
from typing import Any

WORST_SHOWN = 5
PAIRS_SHOWN = 5


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="measure a bundle on a prepared dataset",
        description=(
            "Accuracy, top-3 accuracy, MAP@3, macro F1, calibration error (ECE) and "
            "per-class precision, recall and F1 of a bundle on one split of a prepared "
            "dataset. Classes are matched by name: the dataset may hold any of the "
            "model's classes, in any order. --report writes pictures (confusion matrix, "
            "most-confused pairs, misclassified examples, training curves, first-layer "
            "filters) and an index.html."
        ),
    )
    p.add_argument("bundle", help="bundle folder (what train writes to RUNDIR/bundle)")
    p.add_argument("--data", required=True, metavar="DIR", help="prepared dataset folder")
    p.add_argument("--split", default="test", help="split to measure on (default: test)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--report", metavar="DIR", help="write the report (index.html) there")
    p.add_argument(
        "--batch-size", type=int, default=256, metavar="N", help="examples per batch (256)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from imgclass.bundle import load_bundle
    from imgclass.data.store import PreparedDataset
    from imgclass.evaluate.metrics import most_confused
    from imgclass.evaluate.run import evaluate

    if args.report:
        from imgclass.evaluate.report import check_destination

        check_destination(args.report)
    bundle = load_bundle(args.bundle, threads=0)
    with PreparedDataset.open(args.data) as ds:
        metrics, y, proba = evaluate(bundle, ds, args.split, args.batch_size)
        report = None
        if args.report:
            from imgclass.evaluate.report import write_report

            report = write_report(args.report, bundle, ds, args.split, metrics, y, proba)
    pairs = most_confused(metrics["confusion"], bundle.labels, 20)
    if args.json:
        out = {k: v for k, v in metrics.items() if k != "confusion"}
        out.update(
            model=bundle.model_json.get("name"),
            bundle=str(args.bundle),
            data=str(args.data),
            split=args.split,
            most_confused=pairs,
            report=str(report) if report else None,
        )
        print(json.dumps(out))
        return 0
    print(summary_text(bundle, args, metrics, pairs, report))
    return 0


def calibration_note(metrics: dict[str, Any]) -> str:
    """What calibration did to the ECE, for bundles that record a temperature."""
    if "ece_uncalibrated" not in metrics:
        return "  (the bundle records no calibration)"
    return (
        f"  ({metrics['ece_uncalibrated']:.4f} before calibration, "
        f"temperature {metrics['temperature']:.3f})"
    )


def summary_text(
    bundle: Any,
    args: argparse.Namespace,
    metrics: dict[str, Any],
    pairs: list[dict[str, Any]],
    report: Any,
) -> str:
    """The human-readable summary: headline numbers, worst classes, worst confusions."""
    from imgclass.text import plural

    present = {c: v for c, v in metrics["per_class"].items() if v["support"] > 0}
    lines = [
        f"{bundle.model_json.get('name')} on {args.data}: {args.split} split, "
        f"{plural(metrics['n'], 'example')}, {plural(len(present), 'class', 'classes')}",
        f"  accuracy        {metrics['accuracy']:.4f}",
        f"  top-3 accuracy  {metrics['top3_accuracy']:.4f}",
        f"  MAP@3           {metrics['map3']:.4f}",
        f"  macro F1        {metrics['macro_f1']:.4f}",
        f"  ECE (15 bins)   {metrics['ece']:.4f}{calibration_note(metrics)}",
    ]
    worst = sorted(present.items(), key=lambda kv: (kv[1]["f1"], kv[0]))[:WORST_SHOWN]
    if worst and worst[0][1]["f1"] < 1:
        lines.append("worst classes (F1): " + ", ".join(f"{c} {v['f1']:.2f}" for c, v in worst))
    if pairs:
        shown = [
            f"{p['true']} → {p['predicted']} ({p['count']}, {p['rate']:.0%})"
            for p in pairs[:PAIRS_SHOWN]
        ]
        lines.append("most confused: " + "; ".join(shown))
    if report:
        lines.append(f"report: {report}")
    return "\n".join(lines)
