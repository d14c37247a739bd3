"""``imgclass train``: train a model family on a prepared dataset and write a bundle."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a model and write RUNDIR/bundle",
        description="Train a registered model family on a prepared dataset, evaluate it on the "
        "test split and write a deployable bundle (ONNX, labels, recipe, metrics, model card) "
        "to RUNDIR/bundle.",
        epilog="examples:\n  imgclass train --data work/doodles --out runs/resnet\n"
        "  imgclass train --data work/mnist --model cnn-small --epochs 5 --set lr=3e-4\n"
        "  imgclass train --data work/mnist --model pca-svm --set n_components=50 --set C=10",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument("--out", required=True, help="run folder (RUNDIR)")
    p.add_argument(
        "--model", help="model name (default: cnn-resnet for bitmaps); see --list-models"
    )
    p.add_argument("--epochs", type=int, help="number of epochs (default: the model's)")
    p.add_argument("--config", help="YAML file of settings")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting"
    )
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--resume", action="store_true", help="continue from RUNDIR/checkpoints/last.pt")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from imgclass.data.store import PreparedDataset
    from imgclass.train.config import resolve_config
    from imgclass.train.run import default_model, train

    model = args.model
    if model is None:
        with PreparedDataset.open(args.data) as ds:
            model = default_model(ds)
    cfg = resolve_config(model, args.config, args.set, epochs=args.epochs, seed=args.seed)
    outcome = train(args.data, args.out, cfg, resume=args.resume)
    test = outcome.metrics.get("test", {})
    if args.json:
        print(
            json.dumps(
                {
                    "bundle": str(outcome.bundle),
                    **{k: v for k, v in outcome.metrics.items() if k != "history"},
                }
            )
        )
        return 0
    print(
        f"{model}: test accuracy {test.get('accuracy', float('nan')):.4f}, "
        f"top-3 {test.get('top3_accuracy', float('nan')):.4f} on {test.get('n', 0)} examples, "
        f"{outcome.seconds:.0f} s"
    )
    print(f"bundle: {outcome.bundle}")
    return 0
