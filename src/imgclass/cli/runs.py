"""``imgclass runs``: compare tracked training runs in the terminal."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXAMPLES = """\
examples:
  imgclass runs                                  # every run, best test accuracy first
  imgclass runs --data doodles --model cnn-resnet
  imgclass runs --data work/doodles --sort val_loss --limit 5
  imgclass runs --experiment mnist --sort total_seconds --reverse
  imgclass runs --tracking-uri sqlite:///$PWD/work/mlflow/mlflow.db --json

--sort takes any metric the runs logged (test_accuracy, test_top3_accuracy,
valid_accuracy, val_loss, train_loss, total_seconds, ...) or start_time / duration.
Losses, ece, seconds and duration sort lowest first, everything else highest first;
runs without the metric (still running, failed) come last, newest first.
The same runs, with curves and artifacts, in a browser:
  mlflow ui --backend-store-uri sqlite:///$PWD/work/mlflow/mlflow.db
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "runs",
        help="compare tracked training runs (MLflow) in a table",
        description="List the training runs recorded in the MLflow store, filtered by "
        "dataset and model and sorted by a metric, without opening a browser.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", metavar="NAME_OR_PATH", help="only runs on this dataset")
    p.add_argument("--model", metavar="NAME", help="only runs of this model (e.g. cnn-small)")
    p.add_argument("--experiment", metavar="NAME", help="only this experiment (default: all)")
    p.add_argument(
        "--sort", metavar="METRIC", default="test_accuracy", help="default test_accuracy"
    )
    p.add_argument("--reverse", action="store_true", help="worst first")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="at most N runs (20)")
    p.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else work/mlflow/mlflow.db)",
    )
    p.add_argument("--json", action="store_true", help="print the runs as one JSON object")
    p.set_defaults(func=run_runs)


def run_runs(args: argparse.Namespace) -> int:
    from imgclass.experiments.mlflow_store import resolve_tracking_uri
    from imgclass.experiments.runs import list_runs, missing_metric_note, runs_table

    uri = resolve_tracking_uri(args.tracking_uri)
    rows = list_runs(
        uri,
        data=args.data,
        model=args.model,
        experiment=args.experiment,
        sort=args.sort,
        limit=args.limit,
        reverse=args.reverse,
    )
    note = missing_metric_note(rows, args.sort)
    if args.json:
        out = {"tracking_uri": uri, "sort": args.sort, "runs": [r.to_dict() for r in rows]}
        print(json.dumps({**out, "note": note} if note else out))
    elif not rows:
        print(f"no runs found in {uri}" + (" matching the filters" if filtered(args) else ""))
        print("`imgclass train` records a run there unless given --no-track")
    else:
        print(runs_table(rows, args.sort))
        if note:
            print(f"note: {note}", file=sys.stderr)
    return 0


def filtered(args: argparse.Namespace) -> bool:
    return bool(args.data or args.model or args.experiment)
