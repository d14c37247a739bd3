"""Photos with the transfer family (EfficientNet-Lite0, ImageNet-pretrained), on the real
photos in ../shared/data/photos.

  cats-dogs: 600 + 600 photos, 20% held out as the test split (goal >= 97% test accuracy);
  breeds:    1,000 photos over the 120 Stanford Dogs breeds, 5-fold cross-validation
             (goals: top-1 >= 75%, top-5 >= 93%), folds stratified where a breed has enough
             photos.
Each run goes through `imgclass data prepare` (recipe photo) and `imgclass train`, then reads
the bundle's predictions on the held-out photos. Prints a table and one JSON line.
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

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos"
EXE = str(Path(sys.executable).with_name("imgclass"))


def run(args: list[str]) -> str:
    return subprocess.run([EXE, "-q", *args], check=True, capture_output=True, text=True).stdout


def load_photos(folder: Path, tmp: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All photos of an image folder through the photo recipe (224x224 RGB), via a store."""
    from imgclass.data.store import PreparedDataset

    store = tmp / f"all-{folder.name}"
    run(
        [
            "data",
            "prepare",
            str(folder),
            "--out",
            str(store),
            "--recipe",
            "photo",
            "--split",
            "100/0/0",
        ]
    )
    with PreparedDataset.open(store) as ds:
        x, y = ds.load("train")
        return x, y, ds.classes


def folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number of each example: each class dealt round-robin over the folds, shuffled."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=int)
    offset = 0
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)
    return fold


def train_and_score(
    x: np.ndarray, y: np.ndarray, classes: list[str], test: np.ndarray, tmp: Path, sets: list[str]
) -> dict[str, float]:
    from imgclass.bundle import load_bundle
    from imgclass.evaluate.metrics import top_k_accuracy

    src = tmp / "fold.npz"
    np.savez(
        src,
        x_train=x[~test],
        y_train=y[~test],
        x_test=x[test],
        y_test=y[test],
        classes=np.array(classes),
    )
    data, out = tmp / "fold", tmp / "run"
    run(
        [
            "data",
            "prepare",
            str(src),
            "--out",
            str(data),
            "--recipe",
            "photo",
            "--split",
            "100/0/0",
            "--overwrite",
        ]
    )
    start = time.perf_counter()
    args = [
        "train",
        "--data",
        str(data),
        "--model",
        "transfer-efficientnet_lite0",
        "--out",
        str(out),
        "--json",
    ]
    for s in sets:
        args += ["--set", s]
    run(args)
    seconds = time.perf_counter() - start
    bundle = load_bundle(out / "bundle", threads=2)
    proba = bundle.predict_proba(x[test])
    order = [bundle.labels.index(c) for c in classes]
    proba = proba[:, order]
    return {
        "top1": top_k_accuracy(y[test], proba, 1),
        "top5": top_k_accuracy(y[test], proba, 5),
        "n": int(test.sum()),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", choices=["cats-dogs", "breeds"], default="cats-dogs")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--max-folds", type=int, default=5, help="stop after this many folds (time)"
    )
    parser.add_argument("--set", action="append", default=[], help="training overrides")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder = SHARED / ("cats_vs_dogs" if args.suite == "cats-dogs" else "dog_breeds")
        x, y, classes = load_photos(folder, tmp)
        k = 5 if args.suite == "cats-dogs" else args.folds
        assignment = folds(y, k, seed=0)
        for f in range(1 if args.suite == "cats-dogs" else min(k, args.max_folds)):
            r = train_and_score(x, y, classes, assignment == f, tmp, args.set)
            results.append(r)
            print(
                f"{args.suite} fold {f}: top-1 {r['top1']:.4f} top-5 {r['top5']:.4f} n={r['n']} "
                f"train {r['seconds']:.0f} s",
                flush=True,
            )
    top1 = float(np.mean([r["top1"] for r in results]))
    top5 = float(np.mean([r["top5"] for r in results]))
    print(f"{args.suite}: mean top-1 {top1:.4f}, top-5 {top5:.4f} over {len(results)} fold(s)")
    print(
        json.dumps(
            {"bench": "photos", "suite": args.suite, "folds": results, "top1": top1, "top5": top5}
        )
    )


if __name__ == "__main__":
    main()
