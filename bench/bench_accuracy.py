"""Accuracy of the model families on the real data in ../shared/data.

  mnist:    the official 60k/10k split (goals: cnn-resnet >= 99.5%, cnn-small >= 99.0%,
            pca-svm >= 98.3%);
  doodles:  Quick, Draw! real drawings, 60 per class for training (of which 10% valid),
            20 per class as the test split, on the 20 Pictionary categories or all 345
            (each improved model must beat cnn-small trained the plain way).
Each run goes through `imgclass data prepare` and `imgclass train` (the real pipeline) and
reads the test metrics from the bundle. Prints a table and one JSON line.

--augments affine,flip-crop trains each selected run once per augmentation preset, side by
side (the recipe's own choice is what `auto` picks: affine for these drawings and digits);
--set adds overrides to every run (e.g. --set epochs=5 --set max_train_samples=10000 for
a short MNIST run on a busy machine).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PICTIONARY = "apple,sun,tree,house,car,cat,fish,star,umbrella,flower,moon,airplane,bicycle,clock,eye,cup,shoe,cloud,lightning,smiley face"
EXE = str(Path(sys.executable).with_name("imgclass"))


def prepare_doodles(tmp: Path, categories: str | None) -> Path:
    """75/25 by drawing order per class: the first 60 train (+valid), the last 20 test."""
    q = np.load(SHARED / "quickdraw_345x80.npz")
    classes = [str(c) for c in q["classes"]]
    keep = classes if categories is None else categories.split(",")
    idx = [np.flatnonzero(q["y"] == classes.index(c)) for c in keep]
    train = np.concatenate([i[:60] for i in idx])
    test = np.concatenate([i[60:80] for i in idx])
    src = tmp / "doodles.npz"
    remap = {classes.index(c): k for k, c in enumerate(keep)}
    y = np.array([remap.get(int(v), -1) for v in q["y"]])
    np.savez(
        src,
        x_train=q["x"][train],
        y_train=y[train],
        x_test=q["x"][test],
        y_test=y[test],
        classes=np.array(keep),
    )
    out = tmp / f"doodles-{len(keep)}"
    subprocess.run(
        [
            EXE,
            "-q",
            "data",
            "prepare",
            str(src),
            "--out",
            str(out),
            "--recipe",
            "sketch",
            "--split",
            "90/10/0",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # Class names: the npz above has none, so the store names them "0".."k-1" in sorted order.
    return out


def prepare_mnist(tmp: Path) -> Path:
    out = tmp / "mnist"
    subprocess.run(
        [
            EXE,
            "-q",
            "data",
            "prepare",
            str(SHARED / "mnist.npz"),
            "--out",
            str(out),
            "--recipe",
            "mnist",
            "--split",
            "90/10/0",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out


def train(data: Path, model: str, out: Path, sets: list[str]) -> dict:
    start = time.perf_counter()
    args = [EXE, "-q", "train", "--data", str(data), "--model", model, "--out", str(out)]
    args += ["--json", "--no-track"]
    for s in sets:
        args += ["--set", s]
    result = subprocess.run(args, check=True, capture_output=True, text=True)
    metrics = json.loads(result.stdout)
    metrics["wall_seconds"] = time.perf_counter() - start
    return metrics


RUNS = {
    "mnist": [
        ("pca-svm", ["n_components=50", "C=10"]),
        ("cnn-small", ["epochs=12"]),
        ("cnn-resnet", ["epochs=15", "augment=affine"]),
    ],
    "doodles": [
        ("cnn-small", []),
        (
            "cnn-small",
            ["optimizer=adamw", "schedule=onecycle", "lr=3e-3", "epochs=30", "augment=affine"],
        ),
        ("cnn-3conv", []),
        ("cnn-resnet", []),
        (
            # ImageNet-pretrained; the 28x28 sketches are scaled to 96 and inverted in the model.
            "transfer-efficientnet_lite0",
            [
                "model.resize=96",
                "model.invert=true",
                "augment=affine",
                "epochs=12",
                "frozen_epochs=2",
                "batch_size=64",
                "lr=2e-3",
                "unfreeze_lr_factor=0.3",
            ],
        ),
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--suite", choices=["mnist", "doodles20", "doodles345"], default="doodles20"
    )
    parser.add_argument("--models", help="comma-separated subset of the suite's models")
    parser.add_argument(
        "--augments", help="comma-separated presets: each run once per preset (augment=...)"
    )
    parser.add_argument("--set", action="append", default=[], help="overrides for every run")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.suite == "mnist":
            data, runs = prepare_mnist(tmp), RUNS["mnist"]
        else:
            data = prepare_doodles(tmp, PICTIONARY if args.suite == "doodles20" else None)
            runs = RUNS["doodles"]
        presets = args.augments.split(",") if args.augments else [None]
        plan = [
            (model, [*sets, *args.set, *([f"augment={a}"] if a else [])])
            for model, sets in runs
            if not args.models or model in args.models.split(",")
            for a in presets
        ]
        for k, (model, sets) in enumerate(plan):
            m = train(data, model, tmp / f"run{k}", sets)
            rows.append(
                {
                    "model": model,
                    "settings": " ".join(sets) or "defaults",
                    "accuracy": m["test"]["accuracy"],
                    "top3": m["test"]["top3_accuracy"],
                    "n": m["test"]["n"],
                    "seconds": m["wall_seconds"],
                    "train_seconds": m.get("train_seconds"),
                }
            )
            print(
                f"{model:<12} {rows[-1]['settings']:<60} top-1 {rows[-1]['accuracy']:.4f} "
                f"top-3 {rows[-1]['top3']:.4f} n={rows[-1]['n']} {rows[-1]['seconds']:.0f} s",
                flush=True,
            )
    print(json.dumps({"bench": "accuracy", "suite": args.suite, "runs": rows}))


if __name__ == "__main__":
    main()
