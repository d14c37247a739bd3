"""``imgclass evaluate`` and ``imgclass predict``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from imgclass.errors import DataFormatError


def register(sub: Any) -> None:
    e = sub.add_parser(
        "evaluate",
        help="measure a bundle on a prepared dataset",
        description="Accuracy, top-3, MAP@3, macro F1, calibration error and "
        "per-class scores of a bundle on a prepared dataset (classes matched by name); "
        "--report writes pictures and an index.html.",
    )
    e.add_argument("bundle", help="bundle folder (RUNDIR/bundle)")
    e.add_argument("--data", required=True, help="prepared dataset folder")
    e.add_argument("--split", default="test")
    e.add_argument("--json", action="store_true", help="one JSON object on stdout")
    e.add_argument("--report", help="folder for the report pictures and index.html")
    e.set_defaults(func=run_evaluate)
    p = sub.add_parser(
        "predict",
        help="classify image files or Quick, Draw! ndjson drawings",
        description="Top-k guesses for PNG/JPEG/WebP/BMP/GIF images (any size, either "
        "polarity) and ndjson drawings, through the bundle's own recipe.",
    )
    p.add_argument("bundle")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_predict)


def run_evaluate(args: argparse.Namespace) -> int:
    from imgclass.bundle import load_bundle
    from imgclass.data.store import PreparedDataset
    from imgclass.evaluate.run import evaluate, write_report

    bundle = load_bundle(args.bundle, threads=0)
    with PreparedDataset.open(args.data) as ds:
        metrics, y, proba = evaluate(bundle, ds, args.split)
        report = (
            write_report(args.report, bundle, ds, args.split, metrics, y, proba)
            if args.report
            else None
        )
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if k != "confusion"}))
        return 0
    print(f"{bundle.model_json.get('name')} on {args.data} ({args.split}, {metrics['n']} examples)")
    for key in ("accuracy", "top3_accuracy", "map3", "macro_f1", "ece"):
        print(f"  {key:<14} {metrics[key]:.4f}")
    worst = sorted(metrics["per_class"].items(), key=lambda kv: kv[1]["f1"])[:5]
    print("  worst classes: " + ", ".join(f"{c} (F1 {v['f1']:.2f})" for c, v in worst))
    if report:
        print(f"  report: {report}")
    return 0


def _load_inputs(path: Path) -> list[tuple[str, Any, str]]:
    """(name, decoded input, kind) for an image file or each drawing of an ndjson file."""
    from imgclass.data.sources.imagefolder import load_image
    from imgclass.data.sources.quickdraw import NdjsonSource

    if path.suffix.lower() in (".ndjson", ".jsonl", ".gz"):
        out: list[tuple[str, Any, str]] = []
        for chunk in NdjsonSource(path).iter_chunks():
            for i, drawing in enumerate(chunk.strokes or []):
                out.append(
                    (
                        f"{path}:{chunk.ids[i] if chunk.ids else i}",
                        drawing,
                        chunk.stroke_kind or "raw",
                    )
                )
        return out
    return [(str(path), load_image(path), "image")]


def run_predict(args: argparse.Namespace) -> int:
    import sys

    import numpy as np

    from imgclass.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    failures = 0
    results: list[dict[str, Any]] = []
    for file in args.files:
        try:
            items = _load_inputs(Path(file))
        except DataFormatError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failures += 1
            continue
        for name, value, kind in items:
            if kind == "image":
                proba = bundle.predict_raw([value])[0]
            else:
                proba = bundle.predict_drawings([value], raw=kind == "raw")[0]
            top = np.argsort(-proba)[: args.top_k]
            results.append(
                {
                    "file": name,
                    "predictions": [
                        {"label": bundle.labels[i], "probability": float(proba[i])} for i in top
                    ],
                }
            )
    if args.json:
        print(json.dumps({"model": bundle.model_json.get("name"), "results": results}))
    else:
        for r in results:
            print(r["file"])
            for p in r["predictions"]:
                bar = "█" * round(p["probability"] * 30)
                print(f"  {p['label']:<20} {p['probability']:6.1%} {bar}")
    return 1 if failures else 0
