"""Training-batch reading: random-order batches from the store vs an in-memory array.

Prepares a store of ``--n`` real Quick, Draw! bitmaps (tiled from ../shared/data), then
reads one epoch of shuffled batches of 256 two ways, side by side:
  baseline: the same index sets gathered from the whole split held in a numpy array;
  ours:     ``PreparedDataset.iter_batches`` (decompresses chunks, bounded memory).
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
from imgclass.data.store import PreparedDataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=256)
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
            batches = list(ds.batch_indices("train", args.batch, shuffle=True, seed=0))
            x, y = ds.load("train")
            start = time.perf_counter()
            for b in batches:
                xb, yb = x[b], y[b]
            base_s = time.perf_counter() - start
            start = time.perf_counter()
            n = 0
            for xb, _labels, _ in ds.iter_batches("train", args.batch, shuffle=True, seed=0):
                n += len(xb)
            ours_s = time.perf_counter() - start
            del xb, yb
    total = sum(len(b) for b in batches)
    assert n == total
    ratio = base_s / ours_s
    print(f"{total:,} samples, batches of {args.batch}, random order")
    print(f"{'what':<42} {'samples/s':>12} {'seconds':>8}")
    print(f"{'in-memory numpy gather (baseline)':<42} {total / base_s:>12,.0f} {base_s:>8.2f}")
    print(f"{'store iter_batches':<42} {total / ours_s:>12,.0f} {ours_s:>8.2f}")
    print(f"ratio store / in-memory: {ratio:.2f} (goal >= 0.5)")
    print(
        json.dumps(
            {
                "bench": "read",
                "n": total,
                "batch": args.batch,
                "baseline_samples_per_s": total / base_s,
                "store_samples_per_s": total / ours_s,
                "ratio": ratio,
                "goal_ratio": 0.5,
            }
        )
    )


if __name__ == "__main__":
    main()
