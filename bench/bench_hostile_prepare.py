"""Memory bombs against ``imgclass data prepare``: time to refusal and peak memory, with
real-data prepares measured side by side as the baseline.

Hostile inputs (built in a temporary folder by tests/hostile/memory_bombs.py, each a
valid file of its format that declares far more than it holds):
  a 223-byte sketch-rnn .npz whose pickle calls numpy.ndarray((3e9,), "O"), and one
  that asks for the same through numpy's own _reconstruct + BUILD; an .npz whose x is
  uint8 (4096, 1000, 1000) of zeros (3.8 GiB from 3.9 MB); a gzipped IDX file of the
  same; a .bin drawing declaring 65,535 strokes of 65,535 points; a PNG of 54M pixels;
  and 25 legitimate PNG photos of 7000 x 7000 (prepared, not refused).
Baseline: the full MNIST written as IDX files from ../shared/data/mnist.npz, and the
27,600 Quick, Draw! bitmaps of ../shared/data/quickdraw_345x80.npz.

Each prepare runs in a child process under an address-space limit (--limit-gib) so a
regression cannot take the machine down; its peak RSS is its own VmHWM (ru_maxrss
would carry over the forked copy of this process). Prints a table and one JSON line.
Goal: every bomb refused in under a second, exit 2, peak RSS under 1 GB; real data
under 2 GB.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "tests" / "hostile"))
import memory_bombs as bombs  # noqa: E402

CHILD = """
import sys
from imgclass.cli import main
try:
    rc = main(sys.argv[2:])
finally:
    status = open("/proc/self/status").read().splitlines()
    hwm = next(line for line in status if line.startswith("VmHWM"))
    open(sys.argv[1], "w").write(hwm.split()[1])
sys.exit(rc)
"""


def run_prepare(args: list[str], work: Path, limit: int) -> dict[str, object]:
    """Exit status, seconds, peak RSS (MiB), the message's last line, what was left."""
    out = work / "out"
    peak_file = work / "peak-kb"

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    command = [sys.executable, "-c", CHILD, str(peak_file), "-q", "data", "prepare"]
    start = time.perf_counter()
    proc = subprocess.run(
        [*command, *args, "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        preexec_fn=cap,
    )
    seconds = time.perf_counter() - start
    left = sorted(p.name for p in work.iterdir() if p.name not in ("peak-kb", "in"))
    return {
        "rc": proc.returncode,
        "seconds": round(seconds, 3),
        "peak_mib": round(int(peak_file.read_text()) / 1024, 1) if peak_file.exists() else None,
        "message": (proc.stderr.strip().splitlines() or [""])[-1][:160],
        "left_behind": [n for n in left if n != "out"] + (["out"] if out.exists() else []),
    }


def bytes_on_disk(path: Path) -> int:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files)


def refused_in_goal(r: dict[str, object]) -> bool:
    """Exit 2 in under a second beyond the start-up, peak RSS under 1 GB, nothing left."""
    peak = r["peak_mib"]
    fast = isinstance(r["beyond_startup"], float) and r["beyond_startup"] < 1.0
    small = isinstance(peak, float) and peak * 2**20 < 1e9
    return r["rc"] == 2 and fast and small and not r["left_behind"]


def write_mnist_idx(folder: Path) -> Path:
    """The full MNIST as the four gzipped IDX files."""
    folder.mkdir(parents=True)
    with np.load(SHARED / "mnist.npz") as d:
        for prefix, x, y in (
            ("train", d["x_train"], d["y_train"]),
            ("t10k", d["x_test"], d["y_test"]),
        ):
            head = struct.pack(">IIII", 0x803, *x.shape)
            (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
                gzip.compress(head + x.tobytes(), 6)
            )
            labels = struct.pack(">II", 0x801, len(y)) + y.astype(np.uint8).tobytes()
            (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels, 6))
    return folder


def oversized_png(folder: Path) -> Path:
    from PIL import Image

    (folder / "cat").mkdir(parents=True)
    Image.new("L", (9000, 6000)).save(folder / "cat" / "huge.png")
    return folder


def big_pngs(folder: Path) -> Path:
    """25 PNGs of 7000 x 7000 in one class folder (the issue's case)."""
    root = bombs.huge_photos(folder, jpegs=1, pngs=25)
    (root / "jpeg" / "0.jpg").unlink()
    (root / "jpeg").rmdir()
    return root


CASES: list[tuple[str, str, Callable[[Path], Path]]] = [
    (
        "sketch-rnn pickle: ndarray((3e9,), 'O')",
        "bomb",
        lambda d: bombs.sketchrnn_pickle_bomb(d / "sketchrnn_cat.npz", "ndarray"),
    ),
    (
        "sketch-rnn pickle: _reconstruct + BUILD (3e9,)",
        "bomb",
        lambda d: bombs.sketchrnn_pickle_bomb(d / "sketchrnn_cat.npz", "build"),
    ),
    ("npz zip bomb: x (4096, 1000, 1000)", "bomb", lambda d: bombs.npz_zip_bomb(d / "x.npz")),
    (
        "gzipped IDX bomb: (4096, 1000, 1000)",
        "bomb",
        lambda d: bombs.idx_gzip_bomb(d / "idx", n=4096),
    ),
    (".bin drawing: 65535 x 65535 points", "bomb", lambda d: bombs.bin_points_bomb(d / "c.bin.gz")),
    ("image folder: one PNG of 9000 x 6000", "bomb", lambda d: oversized_png(d / "photos")),
    ("image folder: 25 PNGs of 7000 x 7000", "photos", lambda d: big_pngs(d / "photos")),
    ("baseline: full MNIST as IDX (70,000)", "real", lambda d: write_mnist_idx(d / "mnist")),
    (
        "baseline: Quick, Draw! bitmaps (27,600)",
        "real",
        lambda _d: SHARED / "quickdraw_345x80.npz",
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit-gib", type=float, default=3.0, help="RLIMIT_AS of each child")
    parser.add_argument("--skip-real", action="store_true", help="bombs only, no baseline")
    args = parser.parse_args()
    limit = int(args.limit_gib * (1 << 30))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        # The same imports and start-up, refused at once: an input that does not exist.
        (Path(tmp) / "startup").mkdir()
        startup = run_prepare([str(Path(tmp) / "missing.npz")], Path(tmp) / "startup", limit)
        startup.update(case="start-up: prepare of a missing file", kind="startup", input_bytes=0)
        results.append(startup)
        for i, (name, kind, build) in enumerate(CASES):
            if kind == "real" and args.skip_real:
                continue
            work = Path(tmp) / f"case{i}"
            (work / "in").mkdir(parents=True)
            path = build(work / "in")
            result = {"case": name, "kind": kind, "input_bytes": bytes_on_disk(path)}
            result.update(run_prepare([str(path)], work, limit))
            results.append(result)
    for r in results:
        r["beyond_startup"] = round(r["seconds"] - startup["seconds"], 3)  # type: ignore[operator]
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} cores; times include the start-up")
    header = f"{'input':<46} {'on disk':>9} {'exit':>4} {'seconds':>8} {'beyond':>7}"
    print(f"{header} {'peak MiB':>9}  left")
    for r in results:
        left = ",".join(r["left_behind"]) if r["kind"] == "bomb" else "-"
        print(
            f"{r['case']:<46} {r['input_bytes'] / 1e6:>7.2f}MB {r['rc']:>4} "
            f"{r['seconds']:>8.2f} {r['beyond_startup']:>7.2f} {r['peak_mib'] or 0:>9.0f}  "
            f"{left or 'nothing'}"
        )
    for r in results:
        if r["kind"] == "bomb":
            print(f"  {r['case']}: {r['message']}")
    bombs_ok = all(refused_in_goal(r) for r in results if r["kind"] == "bomb")
    real_ok = all(
        r["rc"] == 0 and (r["peak_mib"] or 0) * 2**20 < 2e9
        for r in results
        if r["kind"] in ("photos", "real")
    )
    print(
        "goal: bombs refused in < 1 s beyond the start-up, exit 2, peak < 1 GB, nothing left; "
        "real data < 2 GB"
    )
    print(
        json.dumps(
            {
                "bench": "hostile_prepare",
                "goal_bombs_met": bombs_ok,
                "goal_real_met": real_ok,
                "load_average": load,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
