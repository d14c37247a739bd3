"""``imgclass train``: train a model family on a prepared dataset and write a bundle."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Recording a finished run in MLflow (bundle, report pictures, the ONNX model), kept out
# of a --time-limit: a few seconds on a laptop.
TRACKING_SECONDS = 4.0

EXAMPLES = """\
examples:
  imgclass train --data work/doodles --out runs/resnet
  imgclass train --data work/mnist --model cnn-small --out runs/small --epochs 5 --set lr=3e-4
  imgclass train --data work/mnist --model pca-svm --out runs/svm --set n_components=50
  imgclass train --data work/doodles --out runs/r2 --config my.yaml --set augment.rotation=10
  imgclass train --data work/doodles --out runs/resnet --resume     # continue a killed run
  imgclass train --data work/mnist --out runs/fast --time-limit 5m  # bundle within 5 minutes
  torchrun --nproc_per_node 2 -m imgclass train --data work/mnist --out runs/ddp
  imgclass train --data work/mnist --out runs/x --experiment mnist --run-name first-try
  imgclass train --data work/mnist --out runs/y --no-track     # no MLflow run

settings (--config YAML keys, --set key=value): epochs, batch_size, optimizer
(adam|adamw|sgd), lr, weight_decay, schedule (onecycle|cosine|plateau|none), warmup,
label_smoothing, patience, min_delta, monitor, augment (auto|none|affine|elastic|flip-crop|
flip-crop-color|photo|sequence or augment.<setting>), seed, num_threads, workers, val_fraction, max_train_samples,
device (auto|cpu|cuda), frozen_epochs, unfreeze_lr_factor, model.<argument>, ...
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a model and write RUNDIR/bundle",
        description="Train a registered model family on a prepared dataset, evaluate it on the "
        "test split and write a deployable bundle (ONNX, labels, recipe, metrics, model card) "
        "to RUNDIR/bundle. The resolved settings go to RUNDIR/config.yaml and a checkpoint "
        "to RUNDIR/checkpoints/last.pt after every epoch.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument("--out", required=True, help="run folder (RUNDIR)")
    p.add_argument(
        "--model",
        help="pca-svm, cnn-small, cnn-3conv, cnn-resnet, cnn-fast, stroke-rnn, "
        "transfer-efficientnet_lite0, transfer-timm:<name>, transfer-tv:<name> (default: "
        "cnn-fast for bitmaps, transfer-efficientnet_lite0 for photos)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        help="number of epochs (default: the model's; the cap under --time-limit)",
    )
    p.add_argument(
        "--time-limit",
        metavar="DURATION",
        help="how long the whole run may take, e.g. 90s, 10m, 1h (plain numbers are seconds): "
        "the schedule is fitted into it from the measured speed, the epochs being a cap",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="autocast precision (default auto: bf16 or fp16 on CUDA, fp32 on CPU)",
    )
    p.add_argument(
        "--channels-last",
        choices=("auto", "on", "off"),
        help="channels-last memory format for convolutional models (default auto: on CUDA)",
    )
    p.add_argument("--config", help="YAML file of settings")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting (repeatable; dotted keys such as model.width=48)",
    )
    p.add_argument(
        "--augment",
        metavar="PRESET",
        help="augmentation preset: auto (the default: affine for drawings and digits, "
        "flip-crop for other grayscale images, flip-crop-color for photos, chosen from the "
        "dataset's recipe), none, affine, elastic, flip-crop, flip-crop-color, photo, sequence",
    )
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from RUNDIR/checkpoints/last.pt with RUNDIR/config.yaml's settings",
    )
    add_tracking_arguments(p)
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=run_train)


def add_tracking_arguments(p: argparse.ArgumentParser) -> None:
    """--tracking-uri, --no-track, --experiment, --run-name (MLflow)."""
    g = p.add_argument_group("tracking (MLflow)")
    g.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///<cwd>/work/mlflow/mlflow.db with artifacts in work/mlflow/artifacts)",
    )
    g.add_argument("--no-track", action="store_true", help="do not record the run in MLflow")
    g.add_argument("--experiment", metavar="NAME", help="MLflow experiment (default imgclass)")
    g.add_argument(
        "--run-name", metavar="NAME", help="run name (default <model>-<dataset>-<date-time>)"
    )


def run_train(args: argparse.Namespace) -> int:
    import time

    clock_start = time.monotonic()  # --time-limit counts from here
    from imgclass.data.store import PreparedDataset
    from imgclass.train.config import resolve_config
    from imgclass.train.run import default_model, train

    config = args.config
    saved = Path(args.out) / "config.yaml"
    if args.resume and config is None and saved.is_file():
        config = str(saved)  # the killed run's settings, unless told otherwise
    with PreparedDataset.open(args.data) as ds:
        fallback, recipe = default_model(ds), ds.recipe
    cfg = resolve_config(
        args.model,
        config,
        args.set,
        fallback_model=fallback,
        recipe=recipe,
        epochs=args.epochs,
        seed=args.seed,
        augment=args.augment,
        time_limit=time_limit_flag(args.time_limit),
        precision=args.precision,
        channels_last=args.channels_last,
    )
    from imgclass.experiments.tracking import track_training

    with track_training(
        cfg,
        Path(args.data),
        Path(args.out),
        uri=args.tracking_uri,
        experiment=args.experiment,
        run_name=args.run_name,
        enabled=not args.no_track,
        resume=args.resume,
    ) as tracker:
        outcome = train(
            args.data,
            args.out,
            cfg,
            resume=args.resume,
            callbacks=[tracker.callback],
            clock_start=clock_start,
            reserve=TRACKING_SECONDS if tracker.enabled else 0.0,
        )
        tracker.finish(outcome)
    if outcome.bundle is None:  # another process of a torchrun group: rank 0 reports
        return 0
    if args.json:
        shown = {k: v for k, v in outcome.metrics.items() if k != "history"}
        print(json.dumps({"model": outcome.model, "bundle": str(outcome.bundle), **shown}))
    else:
        print(summary(outcome.model, outcome.metrics, outcome.seconds, outcome.bundle))
    return 0


def time_limit_flag(text: str | None) -> float | None:
    """--time-limit in seconds (None when not given); ConfigError naming the flag."""
    if text is None:
        return None
    from imgclass.train.budget import parse_duration

    return parse_duration(text, "--time-limit")


def summary(model: str, metrics: dict[str, Any], seconds: float, bundle: Path) -> str:
    """A few lines for people: test accuracy, top-3, time, where the bundle is."""
    from imgclass.text import plural

    test = metrics.get("test")
    if test:
        score = (
            f"test accuracy {test['accuracy']:.4f}, top-3 {test['top3_accuracy']:.4f} "
            f"on {plural(test['n'], 'example')}"
        )
    else:
        score = "no test split to measure it on"
    history = metrics.get("history") or []
    epochs = f", {plural(len(history), 'epoch')}" if history else ""
    budget = metrics.get("budget")
    if budget:
        epochs += f" (of {budget['epochs_cap']}, time limit {budget['time_limit_seconds']:g} s)"
    return f"{model}: {score}{epochs}, {seconds:.0f} s\nbundle: {bundle}"
