"""Prepare throughput on Google-format .npy bitmaps vs reading the same files with numpy.

Builds ``--n`` bitmaps (default 1,000,000) as Quick, Draw! ``<category>.npy`` files by
tiling the real drawings in ../shared/data, then measures side by side, twice: with the
files in the page cache (warm) and with them evicted first (cold, posix_fadvise DONTNEED):
  baseline: ``numpy.load(mmap_mode="r")`` + copy of every file;
  ours:     ``imgclass data prepare`` (recipe none: read, split, shuffle, compress, write),
            in a subprocess whose peak RSS is reported;
  and the throughput of the ``sketch`` recipe alone on a sample (it is the costly part
  of a real prepare, and is reported apart so the store's own cost stays visible).
Prints a table and one JSON line. Goal: prepare >= 0.5 of the baseline's speed.
"""

from __future__ import annotations

import argparse
import json
import os
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


def evict(files: list[Path]) -> None:
    """Drop the files from the page cache, so the next read comes from the disk."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def baseline(files: list[Path], cold: bool) -> float:
    if cold:
        evict(files)
    else:
        baseline(files, cold=True)  # one read to bring them in
    start = time.perf_counter()
    total = 0
    for f in files:
        arr = np.load(f, mmap_mode="r")
        total += int(np.array(arr)[-1, -1])  # the copy; touch it so it is not optimised away
    return time.perf_counter() - start


def run_prepare(files: list[Path], out: Path, recipe: str, cold: bool) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of `imgclass data prepare` in a child process."""
    if cold:
        evict(files)
    else:
        baseline(files, cold=True)
    # The child reports its own peak: VmHWM, not ru_maxrss, which Linux carries over
    # from the forked copy of this (large) parent process across exec.
    code = (
        "import sys; from imgclass.cli import main; rc = main(sys.argv[1:]); "
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]; "
        "print(hwm[0].split()[1], file=sys.stderr); sys.exit(rc)"
    )
    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
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
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    peak_kb = int(result.stderr.strip().splitlines()[-1])
    return seconds, peak_kb / 1024


def sketch_rate(sample: int) -> float:
    from imgclass.data.preprocess import apply_recipe, get_recipe

    q = np.load(SHARED / "quickdraw_345x80.npz")["x"]
    images = np.resize(q, (sample, 28, 28))
    start = time.perf_counter()
    apply_recipe(get_recipe("sketch"), images)
    return sample / (time.perf_counter() - start)


def measure(files: list[Path], out: Path, n: int, cold: bool) -> dict[str, float]:
    """Baseline and prepare side by side, in one cache state."""
    base_s = baseline(files, cold)
    total_s, peak_mb = run_prepare(files, out, "none", cold)
    inside_s = json.loads((out / "manifest.json").read_text())["prepare_seconds"]
    return {
        "baseline_img_per_s": n / base_s,
        "prepare_img_per_s": n / total_s,
        "prepare_inside_img_per_s": n / inside_s,
        "ratio": base_s / total_s,
        "ratio_inside": base_s / inside_s,
        "peak_rss_mb": peak_mb,
    }


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
        results = {
            cache: measure(files, folder / "store", n, cold=cache == "cold")
            for cache in ("warm", "cold")
        }
        size_mb = sum(p.stat().st_size for p in (folder / "store").iterdir()) / 1e6
    sketch = sketch_rate(args.sketch_sample)
    print(
        f"{n:,} bitmaps in {args.classes} files: input {n * 784 / 1e6:,.0f} MB, store {size_mb:,.0f} MB"
    )
    print(f"{'what':<46} {'img/s':>12} {'ratio':>6} {'peak MB':>8}")
    for cache, r in results.items():
        rows = [
            (f"numpy.load(mmap) + copy ({cache})", r["baseline_img_per_s"], 1.0, None),
            (
                f"imgclass data prepare, none ({cache})",
                r["prepare_img_per_s"],
                r["ratio"],
                r["peak_rss_mb"],
            ),
            (
                f"  the same, less start-up ({cache})",
                r["prepare_inside_img_per_s"],
                r["ratio_inside"],
                None,
            ),
        ]
        for name, rate, ratio, peak in rows:
            peak_text = "-" if peak is None else f"{peak:,.0f}"
            print(f"{name:<46} {rate:>12,.0f} {ratio:>6.2f} {peak_text:>8}")
    print(f"{'sketch recipe alone (in memory)':<46} {sketch:>12,.0f}")
    print("goal: prepare >= 0.5 of the baseline's speed")
    print(
        json.dumps(
            {
                "bench": "prepare",
                "n": n,
                "files": args.classes,
                "store_mb": size_mb,
                "sketch_img_per_s": sketch,
                "goal_ratio": 0.5,
                **{f"{cache}_{k}": v for cache, r in results.items() for k, v in r.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
