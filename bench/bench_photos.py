"""Photos with the transfer family (EfficientNet-Lite0, ImageNet-pretrained), on the real
photos in ../shared/data/photos, each training variant side by side on the same folds.

  cats-dogs: 600 + 600 photos, 20% held out as the test split (goal: >= 99% test accuracy
             with <= 2 minutes of training on 2 cores); fold 0 only unless --max-folds
             says more (5: each photo held out once, 1,200 test photos in all);
  breeds:    1,000 photos over the 120 Stanford Dogs breeds, 5-fold cross-validation
             (goals: top-1 >= 80%, top-5 >= 95%, each fold <= 3 minutes), folds
             stratified where a breed has enough photos.
Variants (--variants): "cached" is today's default (the head trained on embeddings
computed once, no fine-tuning); "cached-flip" caches each photo's mirror too;
"cached-ft" adds one fine-tuning epoch; "baseline" is the per-epoch backbone path as it
was before the cache (4 epochs, 3 frozen, the photo augmentation), "baseline-1" one
frozen epoch of it. Each run goes through `imgclass data prepare` (recipe photo) and
`imgclass train --no-track`, then reads the bundle's predictions on the held-out photos.
Times: "train" is the whole `imgclass train` command (start-up, features, head, ONNX
export, bundle), "fit" the fit alone as metrics.json records it, "cpu" the command's CPU
seconds (user + system; steadier than wall time on a shared machine). Prints a table and
one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos"
EXE = str(Path(sys.executable).with_name("imgclass"))
VARIANTS = {
    "cached": [],
    "cached-flip": ["cache_views=2"],
    "cached-ft": ["epochs=21", "frozen_epochs=20"],
    "baseline": ["embedding_cache=false", "epochs=4", "frozen_epochs=3", "augment=photo"],
    "baseline-1": ["embedding_cache=false", "epochs=1", "frozen_epochs=1", "augment=photo"],
}


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


def prepare_fold(
    x: np.ndarray, y: np.ndarray, classes: list[str], test: np.ndarray, tmp: Path
) -> Path:
    """The fold's training photos as a prepared dataset (all of them train)."""
    src = tmp / "fold.npz"
    np.savez(
        src,
        x_train=x[~test],
        y_train=y[~test],
        x_test=x[test],
        y_test=y[test],
        classes=np.array(classes),
    )
    data = tmp / "fold"
    run(["data", "prepare", str(src), "--out", str(data), "--recipe", "photo"]
        + ["--split", "100/0/0", "--overwrite"])  # fmt: skip
    return data


def train_and_score(
    data: Path,
    x: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    test: np.ndarray,
    out: Path,
    sets: list[str],
) -> dict[str, float]:
    from imgclass.bundle import load_bundle
    from imgclass.evaluate.metrics import top_k_accuracy

    args = ["train", "--data", str(data), "--model", "transfer-efficientnet_lite0"]
    args += ["--out", str(out), "--json", "--no-track"]
    for s in sets:
        args += ["--set", s]
    start, cpu = time.perf_counter(), children_cpu()
    metrics = json.loads(run(args))
    seconds, cpu = time.perf_counter() - start, children_cpu() - cpu
    bundle = load_bundle(out / "bundle", threads=2)
    proba = bundle.predict_proba(x[test])
    order = [bundle.labels.index(c) for c in classes]
    proba = proba[:, order]
    return {
        "top1": top_k_accuracy(y[test], proba, 1),
        "top5": top_k_accuracy(y[test], proba, 5),
        "n": int(test.sum()),
        "seconds": seconds,
        "fit_seconds": float(metrics.get("train_seconds", float("nan"))),
        "cpu_seconds": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", choices=["cats-dogs", "breeds"], default="cats-dogs")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--max-folds",
        type=int,
        default=None,
        help="stop after this many folds (default: 1 for cats-dogs, whose fold 0 is the "
        "20%% held out; all for breeds); cats-dogs with 5 scores every photo once",
    )
    parser.add_argument(
        "--variants",
        default="cached,baseline-1",
        help=f"comma-separated, from {', '.join(VARIANTS)} (default: cached,baseline-1)",
    )
    parser.add_argument("--set", action="append", default=[], help="training overrides (all)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder = SHARED / ("cats_vs_dogs" if args.suite == "cats-dogs" else "dog_breeds")
        x, y, classes = load_photos(folder, tmp)
        k = 5 if args.suite == "cats-dogs" else args.folds
        assignment = folds(y, k, seed=0)
        max_folds = args.max_folds or (1 if args.suite == "cats-dogs" else k)
        for f in range(min(k, max_folds)):
            test = assignment == f
            data = prepare_fold(x, y, classes, test, tmp)
            for v in variants:
                out = tmp / f"run-{v}-{f}"
                r = train_and_score(data, x, y, classes, test, out, [*VARIANTS[v], *args.set])
                results[v].append(r)
                print(
                    f"{args.suite} fold {f} {v:<11} top-1 {r['top1']:.4f} top-5 {r['top5']:.4f} "
                    f"n={r['n']} train {r['seconds']:.0f} s (fit {r['fit_seconds']:.0f} s, "
                    f"cpu {r['cpu_seconds']:.0f} s)",
                    flush=True,
                )
    summary = {}
    print(f"\n{'variant':<12} {'top-1':>7} {'top-5':>7} {'train s':>8} {'fit s':>7} {'cpu s':>7}")
    for v, rows in results.items():
        mean = {m: float(np.mean([r[m] for r in rows])) for m in rows[0] if m != "n"}
        worst = max(r["seconds"] for r in rows)
        summary[v] = {**mean, "max_seconds": worst, "folds": rows, "settings": VARIANTS[v]}
        print(
            f"{v:<12} {mean['top1']:>7.4f} {mean['top5']:>7.4f} {mean['seconds']:>8.0f} "
            f"{mean['fit_seconds']:>7.0f} {mean['cpu_seconds']:>7.0f}"
        )
    print(json.dumps({"bench": "photos", "suite": args.suite, "variants": summary}))


if __name__ == "__main__":
    main()
