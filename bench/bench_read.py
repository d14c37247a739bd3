"""Training-batch reading: random-order batches from the store vs an in-memory array.

Prepares a store of ``--n`` real Quick, Draw! bitmaps (tiled from ../shared/data), then
reads one epoch of shuffled batches of 256 these ways, side by side:
  baseline: the same index sets gathered from the whole split held in a numpy array;
  ours:     ``PreparedDataset.iter_batches`` (decompresses chunks, bounded memory),
            and the trainer's reader on top of it (``StoreBatches.epoch``: torch tensors,
            full batches only);
  peers (format_peers.py, the same images and the same index sets): the Pictionary
            project's HDF5 layout (gzip 4, chunks of ``--peer-chunk`` images along N) read
            with h5py fancy indexing through a chunk cache big enough for our shuffle
            window (``--peer-cache-mb``; h5py's default 1 MB would decompress every chunk
            of a window for each batch), and a plain .npz (savez_compressed and savez),
            loaded whole and then gathered (the load is part of the epoch).
Prints a table (with each format's size on disk) and one JSON line. Goals: ours >= 0.5
of the in-memory baseline's samples/s; >= 5x the HDF5 gzip-4 peer's, at no more than
1.5x its size on disk (issue 12).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from format_peers import (
    PEER_CHUNK,
    distinct_tiles,
    read_hdf5,
    read_hdf5_chunks,
    read_npz,
    size_mb,
    write_hdf5_gzip,
    write_npz,
)
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


def write_peers(folder: Path, x: np.ndarray, y: np.ndarray, chunk: int) -> dict[str, Path]:
    """The peers' files, from the store's own images in its stored order."""
    paths = {
        "hdf5_gzip4": folder / "pictionary.h5",
        "npz_compressed": folder / "compressed.npz",
        "npz": folder / "stored.npz",
    }
    write_hdf5_gzip(paths["hdf5_gzip4"], x, y, chunk)
    write_npz(paths["npz_compressed"], x, y, compressed=True)
    write_npz(paths["npz"], x, y, compressed=False)
    return paths


def timed(fn, *args):  # noqa: ANN001, ANN201
    """(fn's result, the CPU seconds of this process meanwhile, all threads)."""
    cpu = time.process_time()
    result = fn(*args)
    return result, time.process_time() - cpu


def one_round(ds, x, y, batches, args, peers) -> dict[str, tuple[float, int, float]]:  # noqa: ANN001
    """Seconds, samples and CPU seconds of one epoch each way, one after the other."""
    total = sum(len(b) for b in batches)
    times = {}
    wall, cpu = timed(read_in_memory, x, y, batches)
    times["baseline"] = (wall, total, cpu)
    (wall, n), cpu = timed(read_store, ds, args.batch)
    times["store"] = (wall, n, cpu)
    (wall, n), cpu = timed(read_trainer, ds, args.batch)
    times["trainer"] = (wall, n, cpu)
    if peers:
        readers = {
            "hdf5_gzip4": (read_hdf5, peers["hdf5_gzip4"], batches, args.peer_cache_mb),
            "hdf5_gzip4_chunks": (
                read_hdf5_chunks,
                peers["hdf5_gzip4"],
                batches,
                args.peer_cache_mb,
            ),
            "npz_compressed": (read_npz, peers["npz_compressed"], batches),
            "npz": (read_npz, peers["npz"], batches),
        }
        for name, (fn, *fn_args) in readers.items():
            wall, cpu = timed(fn, *fn_args)
            times[name] = (wall, total, cpu)
    return times


NAMES = {
    "baseline": "in-memory numpy gather (baseline)",
    "store": "store iter_batches (ours)",
    "trainer": "trainer's reader (StoreBatches.epoch)",
    "hdf5_gzip4": "HDF5 gzip-4, Pictionary layout (h5py)",
    "hdf5_gzip4_chunks": "  the same, chunk-aware reader (zlib)",
    "npz_compressed": "npz, savez_compressed (load + gather)",
    "npz": "npz, savez (load + gather)",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, best kept")
    parser.add_argument("--peer-chunk", type=int, default=PEER_CHUNK, help="HDF5 peer's chunk")
    parser.add_argument("--peer-cache-mb", type=int, default=64, help="HDF5 peer's chunk cache")
    parser.add_argument("--no-peers", action="store_true", help="store and baseline only")
    args = parser.parse_args()
    q = np.load(SHARED / "quickdraw_345x80.npz")
    runs: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "all.npz"
        x_all, y_all = distinct_tiles(q["x"], q["y"], args.n)  # prepare drops duplicates
        np.savez(src, x=x_all, y=y_all, classes=q["classes"])
        store = prepare(
            PrepareOptions(inputs=[str(src)], out=f"{tmp}/store", recipe="none", split=(100, 0, 0))
        )
        with PreparedDataset.open(store) as ds:
            batches = list(ds.batch_indices("train", BatchPlan(args.batch, seed=0)))
            x, y = ds.load("train")
            peers = {} if args.no_peers else write_peers(Path(tmp), x, y, args.peer_chunk)
            sizes = {"store": ds.nbytes_on_disk() / 1e6}
            sizes.update({k: size_mb(p) for k, p in peers.items()})
            for _ in range(args.repeat):  # interleaved, so all see the same machine
                for name, (seconds, n, cpu) in one_round(ds, x, y, batches, args, peers).items():
                    runs.setdefault(name, []).append(seconds)
                    cpus.setdefault(name, []).append(cpu)
                    counts[name] = n
    total = sum(len(b) for b in batches)
    if counts["store"] != total:
        raise SystemExit(f"iter_batches gave {counts['store']} samples, expected {total}")
    rate = {k: counts[k] / min(v) for k, v in runs.items()}
    cpu_rate = {k: counts[k] / max(min(v), 1e-9) for k, v in cpus.items()}  # per CPU second
    ratio = rate["store"] / rate["baseline"]
    trainer_ratio = rate["trainer"] / rate["baseline"]
    print(f"{total:,} samples, batches of {args.batch}, random order, best of {args.repeat}")
    print("ours x: the store's speed over this row's (wall clock; per CPU second)")
    print(
        f"{'what':<42} {'samples/s':>12} {'seconds':>8} {'median s':>8} {'CPU s':>7} "
        f"{'disk MB':>8} {'ours x':>7} {'CPU x':>6}"
    )
    for name, times in runs.items():
        disk = f"{sizes[name]:,.1f}" if name in sizes else "-"
        print(
            f"{NAMES[name]:<42} {rate[name]:>12,.0f} {min(times):>8.3f} {np.median(times):>8.3f}"
            f" {min(cpus[name]):>7.3f} {disk:>8} {rate['store'] / rate[name]:>7.2f}"
            f" {cpu_rate['store'] / cpu_rate[name]:>6.2f}"
        )
    print(
        f"ratio store / in-memory: {ratio:.2f} (goal >= 0.5); trainer's reader {trainer_ratio:.2f}"
    )
    peer = {}
    if peers:
        peer = {
            "store_vs_hdf5_speed": rate["store"] / rate["hdf5_gzip4"],
            "store_vs_hdf5_cpu": cpu_rate["store"] / cpu_rate["hdf5_gzip4"],
            "store_vs_hdf5_chunk_aware_cpu": cpu_rate["store"] / cpu_rate["hdf5_gzip4_chunks"],
            "store_vs_hdf5_chunk_aware_speed": rate["store"] / rate["hdf5_gzip4_chunks"],
            "store_vs_hdf5_size": sizes["store"] / sizes["hdf5_gzip4"],
            "goal_speed": 5.0,
            "goal_size_at_most": 1.5,
        }
        print(
            f"store vs HDF5 gzip-4: {peer['store_vs_hdf5_speed']:.1f}x the speed (goal >= 5; "
            f"{peer['store_vs_hdf5_chunk_aware_speed']:.1f}x its chunk-aware reader), "
            f"{peer['store_vs_hdf5_size']:.2f}x the size (goal <= 1.5)"
        )
    print(
        json.dumps(
            {
                "bench": "read",
                "n": total,
                "batch": args.batch,
                "repeat": args.repeat,
                "baseline_samples_per_s": rate["baseline"],
                "store_samples_per_s": rate["store"],
                "ratio": ratio,
                "ratio_median": float(np.median(runs["baseline"]) / np.median(runs["store"])),
                "trainer_samples_per_s": rate["trainer"],
                "trainer_ratio": trainer_ratio,
                "goal_ratio": 0.5,
                "peer_chunk": args.peer_chunk,
                "peer_cache_mb": args.peer_cache_mb,
                "samples_per_s": rate,
                "samples_per_cpu_s": cpu_rate,
                "disk_mb": sizes,
                **peer,
            }
        )
    )


if __name__ == "__main__":
    main()
