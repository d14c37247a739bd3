"""Stroke simplification and rendering: this code against the implementation it replaced.

The baseline is ``tests/data/render_reference.py``, the frozen copy of
``imgclass.data.render`` before issue 10's speed-up (the tests hold both to the same
bytes). For each real Quick, Draw! drawing (raw strokes with timings, as the page sends
them), ``simplify_raw`` and then ``render_strokes`` at 28 px are timed for old and new in
turn, ``--repeat`` times each, as CPU time of this thread: interleaving them drawing by
drawing keeps a busy machine's drift out of the ratio. Prints a table (median and mean
microseconds, and the median of the per-drawing ratios new / old) and one JSON line.
Run: python bench/bench_render.py [--every 40] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "quickdraw_strokes_raw.ndjson.gz"


def cpu_us(fn: Callable[[], Any], repeat: int) -> float:
    """The fastest of ``repeat`` calls, in CPU microseconds of this thread."""
    best = float("inf")
    for _ in range(repeat):
        t = time.thread_time_ns()
        fn()
        best = min(best, time.thread_time_ns() - t)
    return best / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA, help="raw strokes (.ndjson.gz)")
    parser.add_argument("--every", type=int, default=40, help="take every n-th drawing")
    parser.add_argument("--repeat", type=int, default=5, help="calls per drawing (best kept)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests" / "data"))
    import render_reference as old

    from imgclass.data import render as new

    with gzip.open(args.data, "rt") as f:
        lines = f.readlines()[:: args.every]
    drawings = [[np.asarray(s, np.float32).T for s in json.loads(x)["drawing"]] for x in lines]
    times: dict[str, dict[str, list[float]]] = {
        step: {"old": [], "new": []} for step in ("simplify_raw", "render_strokes")
    }
    for drawing in drawings:
        simple = old.simplify_raw(drawing)
        for name, module in (("old", old), ("new", new)):
            times["simplify_raw"][name].append(
                cpu_us(lambda m=module, d=drawing: m.simplify_raw(d), args.repeat)
            )
            times["render_strokes"][name].append(
                cpu_us(lambda m=module, s=simple: m.render_strokes(s), args.repeat)
            )
    print(f"{len(drawings)} real drawings, best of {args.repeat} calls, CPU µs")
    print(f"{'step':16s} {'old p50':>9s} {'new p50':>9s} {'old mean':>9s} {'new mean':>9s} ratio")
    summary = {}
    for step, t in times.items():
        o, n = np.array(t["old"]), np.array(t["new"])
        ratio = float(np.median(n / o))
        summary[step] = {
            "old_p50_us": float(np.median(o)),
            "new_p50_us": float(np.median(n)),
            "old_mean_us": float(o.mean()),
            "new_mean_us": float(n.mean()),
            "median_ratio": ratio,
        }
        print(
            f"{step:16s} {np.median(o):9.0f} {np.median(n):9.0f} {o.mean():9.0f} "
            f"{n.mean():9.0f} {ratio:.2f}"
        )
    print(json.dumps({"bench": "render", "drawings": len(drawings), **summary}))


if __name__ == "__main__":
    main()
