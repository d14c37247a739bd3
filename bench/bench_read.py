"""Training-batch reading: random-order batches from the store vs an in-memory array.

Prepares a store of ``--n`` real Quick, Draw! bitmaps (tiled from ../shared/data), then
reads one epoch of shuffled batches of 256 two ways, side by side:
  baseline: the same index sets gathered from the whole split held in a numpy array;
  ours:     ``PreparedDataset.iter_batches`` (decompresses chunks, bounded memory),
            and the trainer's reader on top of it (``StoreBatches.epoch``: torch tensors,
            full batches only).
Prints a table and one JSON line. Goal: ours >= 0.5 of the baseline's samples/s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from imgclass.data.prepare import PrepareOptions, prepare
from imgclass.data.store import BatchPlan, PreparedDataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def read_in_memory(x: np.ndarray, y: np.ndarray, batches: list[np.ndarray]) -> float:
    """Seconds to gather every batch from arrays in memory (the baseline)."""
    start = time.perf_counter()
    for b in batches:
        xb, yb = x[b], y[b]
    del xb, yb
    return time.perf_counter() - start


def read_store(ds: PreparedDataset, batch: int) -> tuple[float, int]:
    """Seconds for one shuffled epoch of ``iter_batches``, and the samples it gave."""
    start = time.perf_counter()
    n = 0
    for xb, _labels, _ in ds.iter_batches("train", BatchPlan(batch, seed=0)):
        n += len(xb)
    return time.perf_counter() - start, n


def read_trainer(ds: PreparedDataset, batch: int) -> tuple[float, int]:
    """Seconds for one training epoch of the trainer's reader, and the samples it gave."""
    from imgclass.train.batches import StoreBatches

    start = time.perf_counter()
    n = 0
    for _, labels in StoreBatches(ds, "train").epoch(batch, seed=0):
        n += len(labels)
    return time.perf_counter() - start, n


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, best kept")
    args = parser.parse_args()
    q = np.load(SHARED / "quickdraw_345x80.npz")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "all.npz"
        idx = np.resize(np.arange(len(q["y"])), args.n)
        np.savez(src, x=q["x"][idx], y=q["y"][idx], classes=q["classes"])
        store = prepare(
            PrepareOptions(inputs=[str(src)], out=f"{tmp}/store", recipe="none", split=(100, 0, 0))
        )
        with PreparedDataset.open(store) as ds:
            batches = list(ds.batch_indices("train", BatchPlan(args.batch, seed=0)))
            x, y = ds.load("train")
            base, ours, trainer = [], [], []
            for _ in range(args.repeat):  # interleaved, so all see the same machine
                base.append(read_in_memory(x, y, batches))
                seconds, n = read_store(ds, args.batch)
                ours.append(seconds)
                seconds, n_trainer = read_trainer(ds, args.batch)
                trainer.append(seconds)
    total = sum(len(b) for b in batches)
    if n != total:
        raise SystemExit(f"iter_batches gave {n} samples, expected {total}")
    base_s, ours_s, trainer_s = min(base), min(ours), min(trainer)
    ratio = base_s / ours_s
    trainer_ratio = (base_s / total) / (trainer_s / n_trainer)  # per sample: it drops the last
    print(f"{total:,} samples, batches of {args.batch}, random order, best of {args.repeat}")
    print(f"{'what':<42} {'samples/s':>12} {'seconds':>8} {'median s':>8}")
    rows = (
        ("in-memory numpy gather (baseline)", base, total),
        ("store iter_batches", ours, total),
        ("trainer's reader (StoreBatches.epoch)", trainer, n_trainer),
    )
    for name, runs, count in rows:
        best = min(runs)
        print(f"{name:<42} {count / best:>12,.0f} {best:>8.3f} {np.median(runs):>8.3f}")
    print(
        f"ratio store / in-memory: {ratio:.2f} (goal >= 0.5); trainer's reader {trainer_ratio:.2f}"
    )
    print(
        json.dumps(
            {
                "bench": "read",
                "n": total,
                "batch": args.batch,
                "repeat": args.repeat,
                "baseline_samples_per_s": total / base_s,
                "store_samples_per_s": total / ours_s,
                "ratio": ratio,
                "ratio_median": float(np.median(base) / np.median(ours)),
                "trainer_samples_per_s": n_trainer / trainer_s,
                "trainer_ratio": trainer_ratio,
                "goal_ratio": 0.5,
            }
        )
    )


if __name__ == "__main__":
    main()
