"""Prepare throughput on Google-format .npy bitmaps vs reading the same files with numpy.

Builds ``--n`` bitmaps (default 1,000,000) as Quick, Draw! ``<category>.npy`` files by
tiling the real drawings in ../shared/data, then measures side by side, warm cache:
  baseline: ``numpy.load(mmap_mode="r")`` + copy of every file;
  ours:     ``imgclass data prepare`` (recipe none: read, split, shuffle, compress, write),
            in a subprocess whose peak RSS is reported;
  and the throughput of the ``sketch`` recipe alone on a sample.
Prints a table and one JSON line. Goal: prepare >= 0.5 of the baseline's speed.
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

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_files(folder: Path, n: int, classes: int) -> list[Path]:
    q = np.load(SHARED / "quickdraw_345x80.npz")
    names = [str(c) for c in q["classes"]]
    per = n // classes
    files = []
    for k in range(classes):
        base = q["x"][q["y"] == k].reshape(-1, 784)
        data = np.resize(base, (per, 784))  # tiles the 80 real drawings
        path = folder / f"full_numpy_bitmap_{names[k]}.npy"
        np.save(path, data)
        files.append(path)
    return files


def baseline(files: list[Path]) -> float:
    start = time.perf_counter()
    total = 0
    for f in files:
        arr = np.load(f, mmap_mode="r")
        total += int(np.array(arr)[-1, -1])  # the copy; touch it so it is not optimised away
    return time.perf_counter() - start


def run_prepare(files: list[Path], out: Path, recipe: str) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of `imgclass data prepare` in a child process."""
    exe = Path(sys.executable).with_name("imgclass")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(
        [
            str(exe),
            "-q",
            "data",
            "prepare",
            *map(str, files),
            "--out",
            str(out),
            "--recipe",
            recipe,
            "--overwrite",
        ],
        check=True,
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) / 1024


def sketch_rate(sample: int) -> float:
    from imgclass.data.preprocess import apply_recipe, get_recipe

    q = np.load(SHARED / "quickdraw_345x80.npz")["x"]
    images = np.resize(q, (sample, 28, 28))
    start = time.perf_counter()
    apply_recipe(get_recipe("sketch"), images)
    return sample / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="bitmaps in all")
    parser.add_argument("--classes", type=int, default=10, help="number of .npy files")
    parser.add_argument("--sketch-sample", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = make_files(folder, args.n, args.classes)
        n = sum(np.load(f, mmap_mode="r").shape[0] for f in files)
        baseline(files)  # warm the page cache
        base_s = baseline(files)
        ours_s, peak_mb = run_prepare(files, folder / "store", "none")
        size_mb = sum(p.stat().st_size for p in (folder / "store").iterdir()) / 1e6
    sketch = sketch_rate(args.sketch_sample)
    ratio = base_s / ours_s
    rows = [
        ("numpy.load(mmap) + copy", f"{n / base_s:,.0f}", f"{base_s:.2f}", "-"),
        (
            "imgclass data prepare (recipe none)",
            f"{n / ours_s:,.0f}",
            f"{ours_s:.2f}",
            f"{peak_mb:,.0f}",
        ),
        ("sketch recipe alone", f"{sketch:,.0f}", "-", "-"),
    ]
    print(
        f"{n:,} bitmaps, {args.classes} files, input {n * 784 / 1e6:,.0f} MB, store {size_mb:,.0f} MB"
    )
    print(f"{'what':<38} {'img/s':>12} {'seconds':>8} {'peak MB':>8}")
    for row in rows:
        print(f"{row[0]:<38} {row[1]:>12} {row[2]:>8} {row[3]:>8}")
    print(f"ratio prepare / baseline speed: {ratio:.2f} (goal >= 0.5)")
    print(
        json.dumps(
            {
                "bench": "prepare",
                "n": n,
                "baseline_img_per_s": n / base_s,
                "prepare_img_per_s": n / ours_s,
                "ratio": ratio,
                "peak_rss_mb": peak_mb,
                "store_mb": size_mb,
                "sketch_img_per_s": sketch,
                "goal_ratio": 0.5,
            }
        )
    )


if __name__ == "__main__":
    main()
