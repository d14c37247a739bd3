"""``imgclass tune``: an Optuna search over a model family's hyperparameters."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

EXAMPLES = """\
examples:
  imgclass tune --data work/mnist --model cnn-small --trials 20 --epochs 5
  imgclass tune --data work/doodles --model cnn-resnet --trials 40 --timeout 3600
  imgclass tune --data work/mnist --model cnn-small --trials 10 --time-limit 30m
  imgclass tune --data work/mnist --model pca-svm --trials 15 --json
  imgclass tune --data work/mnist --model cnn-small --set batch_size=64 --pruner hyperband
  imgclass tune --data work/mnist --model cnn-small --trials 30   # resumes the 20-trial study
  imgclass train --data work/mnist --out runs/best --config work/tune/cnn-small-mnist/best.yaml

Each family declares its search space next to its definition (learning rate, weight
decay, batch size, dropout, width, augmentation strength; C, gamma and n_components for
pca-svm). The study lives in OUT/optuna.db: running the same --study again resumes it,
--trials being the total wanted (complete and pruned trials count; trials a killed run
left running are marked failed). A study belongs to one dataset, model, search space
and set of fixed settings: running it again with any of them changed (another dataset
in a folder of the same name, another --set or --epochs) is refused; choose a new
--study (or --out) for a new search. Trials are scored on the validation split (the test
split stays out of the search). OUT receives best.yaml (for imgclass train --config),
history.png, importance.png and the best trial's run folder with its bundle. Each trial
is a nested MLflow run under the study's run (pruned ones end KILLED, tagged
imgclass.pruned=true); see imgclass runs or mlflow ui.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "tune",
        help="search hyperparameters with Optuna (resumable)",
        description="Search a model family's hyperparameters on a prepared dataset: TPE "
        "sampling, pruning of bad trials from their per-epoch validation accuracy, a "
        "resumable study in SQLite, every trial tracked in MLflow.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument(
        "--model",
        help="model family to tune (default as imgclass train: cnn-fast for bitmaps, "
        "transfer-efficientnet_lite0 for photos)",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=20,
        help="finished trials wanted in total, earlier runs of the study included (default 20)",
    )
    p.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    p.add_argument(
        "--time-limit",
        metavar="DURATION",
        help="how long the whole search may take (90s, 10m, 1h): each trial trains within "
        "its share of the time left, and no trial starts when too little is left",
    )
    p.add_argument("--study", help="study name (default <model>-<dataset folder>)")
    p.add_argument("--out", help="output folder (default work/tune/<study>)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/optuna.db)")
    add_search_options(p)
    add_tracking_options(p)
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=run_tune)


def add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pruner",
        choices=("median", "hyperband", "none"),
        default="median",
        help="how bad trials are stopped early (default median)",
    )
    p.add_argument(
        "--startup-trials",
        type=int,
        default=2,
        help="median pruner: completed trials before any pruning (default 2)",
    )
    p.add_argument(
        "--warmup-epochs",
        type=int,
        default=1,
        help="median pruner: epochs of each trial never pruned (default 1)",
    )
    p.add_argument("--epochs", type=int, help="epochs per trial (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and of every trial")
    p.add_argument("--config", help="YAML file of fixed settings for every trial")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fixed setting for every trial, taken out of the search (repeatable)",
    )


def add_tracking_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tracking-uri",
        help="MLflow store (default $MLFLOW_TRACKING_URI, else sqlite:///work/mlflow/mlflow.db)",
    )
    p.add_argument("--experiment", help="MLflow experiment (default imgclass)")
    p.add_argument("--no-track", action="store_true", help="do not record the search in MLflow")


def run_tune(args: argparse.Namespace) -> int:
    from imgclass.experiments.tuning import TuneSettings, tune

    settings = TuneSettings(
        data=Path(args.data),
        model=args.model,
        trials=args.trials,
        timeout=args.timeout,
        time_limit=args.time_limit,
        study=args.study,
        out=Path(args.out) if args.out else None,
        storage=args.storage,
        pruner=args.pruner,
        startup_trials=args.startup_trials,
        warmup_epochs=args.warmup_epochs,
        epochs=args.epochs,
        seed=args.seed,
        sets=list(args.set),
        config=args.config,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        track=not args.no_track,
    )
    result = tune(settings)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(summary(result.to_dict()))
    return 0 if result.best_value is not None else 1


def summary(result: dict[str, Any]) -> str:
    """A few lines for people: the best score and settings, the counts, the files."""
    c = result["counts"]
    counted = f"{c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed"
    lines = [f"study {result['study']} ({result['model']}): {counted}"]
    if result["best_value"] is None:
        lines.append("no trial completed: no best configuration")
    else:
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in result["best_params"].items())  # fmt: skip
        lines.append(
            f"best: trial {result['best_trial']}, val_accuracy {result['best_value']:.4f}: {params}"
        )
        lines.append(f"best config: {result['best_config']}")
        if result["best_bundle"]:
            lines.append(f"best bundle: {result['best_bundle']}")
    lines.append(f"pictures: {result['history_plot']}, {result['importance_plot']}")
    lines.append(f"study storage: {result['storage']}")
    return "\n".join(lines)
