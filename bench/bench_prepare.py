"""Prepare throughput on Google-format .npy bitmaps vs reading the same files with numpy.

Builds ``--n`` bitmaps (default 1,000,000) as Quick, Draw! ``<category>.npy`` files from
the real drawings in ../shared/data (each copy shifted so that none repeats: prepare keeps
exact duplicates out), then measures side by side, twice: with the files in the page
cache (warm) and with them evicted first (cold, posix_fadvise DONTNEED):
  baseline: ``numpy.load(mmap_mode="r")`` + copy of every file;
  ours:     ``imgclass data prepare`` (recipe none: read, hash for duplicates, split,
            shuffle, compress, write), in a subprocess whose peak RSS is reported;
  peers (format_peers.py), from the same files: the Pictionary project's layout (one
            HDF5 file, gzip 4, chunks of ``--peer-chunk`` images along N, plus labels)
            and a plain .npz (savez_compressed and savez): read the files, concatenate,
            write; in this process (no start-up to pay; nothing else done to the data);
            and the HDF5 one again as a script in a fresh process, as its users run it
            (start-up, imports and fresh memory paid, like ours);
  and the throughput of the ``sketch`` recipe alone on a sample (it is the costly part
  of a real prepare, and is reported apart so the store's own cost stays visible).
Prints a table (with each format's size on disk) and one JSON line. Goals: prepare
>= 0.5 of the baseline's speed; >= 2x the HDF5 gzip-4 peer's, at no more than 1.5x its
size on disk (issue 12).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from format_peers import PEER_CHUNK, distinct_tiles, size_mb, write_hdf5_gzip, write_npz

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PER_CLASS_LIMIT = 4000  # distinct shifted copies of a class's 80 drawings, well within reach


def make_files(folder: Path, n: int, classes: int) -> list[Path]:
    q = np.load(SHARED / "quickdraw_345x80.npz")
    names = [str(c) for c in q["classes"]]
    classes = classes or max(10, -(-n // PER_CLASS_LIMIT))
    per = n // classes
    files = []
    for k in range(classes):
        real = q["x"][q["y"] == k]
        data = distinct_tiles(real, np.zeros(len(real)), per)[0].reshape(per, 784)
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


def run_prepare(
    files: list[Path], out: Path, recipe: str, cold: bool
) -> tuple[float, float, float, float]:
    """(seconds, peak RSS in MB, CPU seconds, and those after the start-up) of `imgclass
    data prepare` in a child process."""
    if cold:
        evict(files)
    else:
        baseline(files, cold=True)
    # The child reports its own peak: VmHWM, not ru_maxrss, which Linux carries over
    # from the forked copy of this (large) parent process across exec.
    code = (
        "import sys, time; from imgclass.cli import main; cpu = time.process_time(); "
        "rc = main(sys.argv[1:]); cpu = time.process_time() - cpu; "
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]; "
        "print(hwm[0].split()[1], cpu, file=sys.stderr); sys.exit(rc)"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
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
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak_kb, cpu_inside = result.stderr.strip().splitlines()[-1].split()
    return seconds, int(peak_kb) / 1024, cpu, float(cpu_inside)


def sketch_rate(sample: int) -> float:
    from imgclass.data.preprocess import apply_recipe, get_recipe

    q = np.load(SHARED / "quickdraw_345x80.npz")["x"]
    images = np.resize(q, (sample, 28, 28))
    start = time.perf_counter()
    apply_recipe(get_recipe("sketch"), images)
    return sample / (time.perf_counter() - start)


PEERS = {
    "hdf5_gzip4": ("pictionary.h5", lambda p, x, y, chunk: write_hdf5_gzip(p, x, y, chunk)),
    "npz_compressed": ("compressed.npz", lambda p, x, y, _: write_npz(p, x, y, compressed=True)),
    "npz": ("stored.npz", lambda p, x, y, _: write_npz(p, x, y, compressed=False)),
}


def run_peer(
    name: str, files: list[Path], folder: Path, cold: bool, chunk: int
) -> tuple[float, float]:
    """(seconds, CPU seconds) to turn the .npy files into the peer's file: read,
    concatenate, write."""
    if cold:
        evict(files)
    else:
        baseline(files, cold=True)
    filename, write = PEERS[name]
    start, cpu = time.perf_counter(), time.process_time()
    parts = [np.load(f).reshape(-1, 28, 28) for f in files]
    labels = np.repeat(np.arange(len(parts), dtype=np.int16), [len(p) for p in parts])
    write(folder / filename, np.concatenate(parts), labels, chunk)
    return time.perf_counter() - start, time.process_time() - cpu


PEER_SCRIPT = """
import sys
from pathlib import Path
import numpy as np
from format_peers import write_hdf5_gzip
files, out, chunk = sys.argv[1:-2], Path(sys.argv[-2]), int(sys.argv[-1])
parts = [np.load(f).reshape(-1, 28, 28) for f in files]
labels = np.repeat(np.arange(len(parts), dtype=np.int16), [len(p) for p in parts])
write_hdf5_gzip(out, np.concatenate(parts), labels, chunk)
"""


def run_peer_script(files: list[Path], folder: Path, cold: bool, chunk: int) -> tuple[float, float]:
    """(seconds, CPU seconds) of the HDF5 gzip-4 peer as its users run it: a script in a
    fresh process (start-up and imports paid, as ``imgclass data prepare`` pays them)."""
    if cold:
        evict(files)
    else:
        baseline(files, cold=True)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    cmd = [sys.executable, "-c", PEER_SCRIPT, *map(str, files), str(folder / "script.h5")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([*cmd, str(chunk)], check=True, env=env)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def measure(
    files: list[Path], out: Path, n: int, cold: bool, peer_chunk: int | None
) -> dict[str, float]:
    """Baseline, prepare and the peers side by side, in one cache state."""
    base_s = baseline(files, cold)
    total_s, peak_mb, cpu_s, cpu_inside_s = run_prepare(files, out, "none", cold)
    inside_s = json.loads((out / "manifest.json").read_text())["prepare_seconds"]
    result = {
        "baseline_img_per_s": n / base_s,
        "prepare_img_per_s": n / total_s,
        "prepare_inside_img_per_s": n / inside_s,
        "ratio": base_s / total_s,
        "ratio_inside": base_s / inside_s,
        "peak_rss_mb": peak_mb,
        "prepare_cpu_s": cpu_s,
        "prepare_cpu_inside_s": cpu_inside_s,
    }
    if peer_chunk is not None:
        for name in PEERS:
            peer_s, peer_cpu = run_peer(name, files, out.parent, cold, peer_chunk)
            result[f"{name}_img_per_s"] = n / peer_s
            result[f"{name}_cpu_s"] = peer_cpu
            result[f"prepare_vs_{name}_cpu"] = peer_cpu / cpu_s
            result[f"prepare_inside_vs_{name}_cpu"] = peer_cpu / cpu_inside_s
            result[f"prepare_vs_{name}"] = peer_s / total_s
            result[f"prepare_inside_vs_{name}"] = peer_s / inside_s
        script_s, script_cpu = run_peer_script(files, out.parent, cold, peer_chunk)
        result["hdf5_script_img_per_s"] = n / script_s
        result["hdf5_script_cpu_s"] = script_cpu
        result["prepare_vs_hdf5_script"] = script_s / total_s
        result["prepare_vs_hdf5_script_cpu"] = script_cpu / cpu_s
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="bitmaps in all")
    parser.add_argument(
        "--classes", type=int, default=0, help="number of .npy files (0: 10, or more for --n)"
    )
    parser.add_argument("--sketch-sample", type=int, default=20_000)
    parser.add_argument("--peer-chunk", type=int, default=PEER_CHUNK, help="HDF5 peer's chunk")
    parser.add_argument("--no-peers", action="store_true", help="baseline and prepare only")
    args = parser.parse_args()
    chunk = None if args.no_peers else args.peer_chunk
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = make_files(folder, args.n, args.classes)
        n = sum(np.load(f, mmap_mode="r").shape[0] for f in files)
        results = {
            cache: measure(files, folder / "store", n, cold=cache == "cold", peer_chunk=chunk)
            for cache in ("warm", "cold")
        }
        store_mb = size_mb(folder / "store")
        sizes = {"store": store_mb}
        if chunk is not None:
            sizes.update({k: size_mb(folder / PEERS[k][0]) for k in PEERS})
    sketch = sketch_rate(args.sketch_sample)
    print(f"{n:,} bitmaps in {len(files)} files: input {n * 784 / 1e6:,.0f} MB")
    print("size on disk (MB): " + ", ".join(f"{k} {v:,.1f}" for k, v in sizes.items()))
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
        names = {"hdf5_gzip4": "HDF5 gzip-4, Pictionary layout", "hdf5_script":
                 "  the same as a script (fresh process)", "npz_compressed":
                 "npz, savez_compressed", "npz": "npz, savez"}  # fmt: skip
        for peer, label in names.items():
            if f"{peer}_img_per_s" in r:
                rate = r[f"{peer}_img_per_s"]
                rows.append((f"{label} ({cache})", rate, rate / r["baseline_img_per_s"], None))
        for name, rate, ratio, peak in rows:
            peak_text = "-" if peak is None else f"{peak:,.0f}"
            print(f"{name:<46} {rate:>12,.0f} {ratio:>6.2f} {peak_text:>8}")
    print(f"{'sketch recipe alone (in memory)':<46} {sketch:>12,.0f}")
    print("goal: prepare >= 0.5 of the baseline's speed")
    if "hdf5_gzip4" in sizes:
        for cache, r in results.items():
            print(
                f"prepare vs HDF5 gzip-4 ({cache}): {r['prepare_vs_hdf5_gzip4']:.2f}x the speed "
                f"({r['prepare_inside_vs_hdf5_gzip4']:.2f}x less start-up; goal >= 2); CPU "
                f"seconds {r['prepare_cpu_s']:.2f} ({r['prepare_cpu_inside_s']:.2f} less start-up) "
                f"against {r['hdf5_gzip4_cpu_s']:.2f}: {r['prepare_vs_hdf5_gzip4_cpu']:.2f}x "
                f"({r['prepare_inside_vs_hdf5_gzip4_cpu']:.2f}x)"
            )
            print(
                f"prepare vs HDF5 gzip-4 as a script, both fresh processes ({cache}): "
                f"{r['prepare_vs_hdf5_script']:.2f}x the speed, {r['prepare_vs_hdf5_script_cpu']:.2f}x "
                f"in CPU seconds ({r['prepare_cpu_s']:.2f} against {r['hdf5_script_cpu_s']:.2f})"
            )
        print(f"store size vs HDF5 gzip-4: {store_mb / sizes['hdf5_gzip4']:.2f}x (goal <= 1.5)")
    print(
        json.dumps(
            {
                "bench": "prepare",
                "n": n,
                "files": len(files),
                "store_mb": store_mb,
                "disk_mb": sizes,
                "peer_chunk": chunk,
                "sketch_img_per_s": sketch,
                "goal_ratio": 0.5,
                **{f"{cache}_{k}": v for cache, r in results.items() for k, v in r.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
