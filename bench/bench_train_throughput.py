"""Training throughput: imgclass's trainer vs a bare PyTorch loop, side by side.

Throughput (always), for each of ``--models`` (by default the default bitmap family
``cnn-fast`` and the seeds' ``cnn-small``): samples per second of ``Trainer.fit`` over
the first ``--n`` real MNIST digits (uint8 arrays in memory, converted per batch,
progress bar, loss/accuracy bookkeeping, no validation), without augmentation, against
a bare loop over float tensors already in memory with the same model, optimizer (the
family's, no schedule) and batch size (the family's, or ``--batch-size``); and the
trainer with the family's own augmentation, to show what augmenting costs. Runs
alternate, ``--repeat`` times each after a warm-up round, medians compared; speeds per
second of CPU time too (fairer on a machine other processes are using; use
``--threads 1`` there). Goals: trainer >= 0.85 of the bare loop; the default family
>= 2,500 samples/s on 2 cores.

Time to 99% (``--time-to-99``, long): ``cnn-resnet`` with its default recipe (AdamW,
one-cycle over ``--epochs``, affine augmentation, label smoothing) through the trainer,
and the same network, optimizer and schedule in a bare loop without augmentation, on the
official 60k/10k split: training seconds until the test accuracy first reaches 99%
(test evaluation time excluded).

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imgclass.models import create_model
from imgclass.train.batches import ArrayBatches
from imgclass.train.config import TrainConfig, resolve_config
from imgclass.train.trainer import Trainer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# What settles an "auto" augmentation as ``imgclass train`` would on prepared digits
# (without it the "family's augment" rows trained without any augmentation).
MNIST_RECIPE = {"name": "mnist"}


def load_mnist(path: Path, n: int) -> tuple[np.ndarray, ...]:
    m = np.load(path)
    x, y = m["x_train"][:n], m["y_train"][:n].astype(np.int64)
    return x, y, m["x_test"], m["y_test"].astype(np.int64)


def as_float(x: np.ndarray) -> torch.Tensor:
    """uint8 (n, 28, 28) -> float32 (n, 1, 28, 28) in [0, 1]."""
    return torch.from_numpy(x).float().div_(255).unsqueeze(1)


def bare_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    sched: Any = None,
) -> float:
    """One epoch of the plainest loop over in-memory float tensors; its seconds."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    start = time.perf_counter()
    order = torch.randperm(len(y))
    for i in range(0, len(y), batch):
        idx = order[i : i + batch]
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    return time.perf_counter() - start


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The family's optimizer, as the trainer builds it (no schedule in either loop)."""
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(cfg.optimizer)
    if kind is None:
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    return kind(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def bare_throughput(name: str, cfg: TrainConfig, x: np.ndarray, y: np.ndarray) -> Speed:
    torch.manual_seed(0)
    model = create_model(name, 10, **cfg.model_args)
    opt = make_optimizer(model, cfg)
    xt, yt = as_float(x), torch.from_numpy(y)
    cpu = time.process_time()
    seconds = bare_epoch(model, opt, xt, yt, cfg.batch_size)
    return Speed(len(y) / seconds, len(y) / (time.process_time() - cpu))


def trainer_throughput(name: str, cfg: TrainConfig, x: np.ndarray, y: np.ndarray) -> Speed:
    torch.manual_seed(0)
    model = create_model(name, 10, **cfg.model_args)
    start, cpu = time.perf_counter(), time.process_time()
    Trainer(model, cfg).fit(ArrayBatches((x,), y))
    return Speed(len(y) / (time.perf_counter() - start), len(y) / (time.process_time() - cpu))


@dataclass
class Speed:
    """Samples per second of wall time, and per second of this process's CPU time (the
    latter less disturbed by other processes on a shared machine)."""

    wall: float
    cpu: float


def median(speeds: list[Speed]) -> Speed:
    return Speed(
        statistics.median(s.wall for s in speeds), statistics.median(s.cpu for s in speeds)
    )


def throughput(args: argparse.Namespace, name: str, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Bare loop, trainer without augmentation (the same work as the bare loop) and
    trainer with the family's own augmentation, alternated, medians of ``--repeat``."""
    sets = ["epochs=1", f"num_threads={args.threads}", "workers=-1"]
    sets += [f"batch_size={args.batch_size}"] if args.batch_size else []
    plain = resolve_config(name, sets=[*sets, "augment=none"])
    own = resolve_config(name, sets=sets, recipe=MNIST_RECIPE)  # "auto" -> the digits' own
    base = dataclasses.asdict(plain.augment)
    torch.set_num_threads(args.threads)
    runs: dict[str, list[Speed]] = {"bare": [], "trainer": [], "trainer_augmented": []}
    for _ in range(args.repeat + 1):  # the first round warms up (allocator, kernels)
        runs["bare"].append(bare_throughput(name, plain, x, y))
        runs["trainer"].append(trainer_throughput(name, plain, x, y))
        runs["trainer_augmented"].append(trainer_throughput(name, own, x, y))
    speeds = {k: median(v[1:]) for k, v in runs.items()}
    return {
        "model": name,
        "batch_size": plain.batch_size,
        "augment": {k: v for k, v in dataclasses.asdict(own.augment).items() if v != base[k]},
        **{f"{k}_samples_per_s": v.wall for k, v in speeds.items()},
        **{f"{k}_samples_per_cpu_s": v.cpu for k, v in speeds.items()},
        "ratio": speeds["trainer"].wall / speeds["bare"].wall,
        "ratio_cpu": speeds["trainer"].cpu / speeds["bare"].cpu,
        "runs": args.repeat,
    }


# --- time to 99% ---------------------------------------------------------------------


class Reached(Exception):
    pass


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 1000]).argmax(1) for i in range(0, len(y), 1000)])
    return float((pred == y).float().mean())


def trainer_time_to(
    target: float, cfg: TrainConfig, data: tuple[np.ndarray, ...]
) -> dict[str, Any]:
    x, y, xt, yt = data
    torch.manual_seed(0)
    model = create_model("cnn-resnet", 10, **cfg.model_args)
    test_x, test_y = as_float(xt), torch.from_numpy(yt)
    spent = {"seconds": 0.0, "epoch": 0, "accuracy": 0.0}

    def check(epoch: int, row: dict[str, float]) -> None:
        spent["seconds"] += row["seconds"]
        spent["epoch"], spent["accuracy"] = epoch, accuracy(model, test_x, test_y)
        if spent["accuracy"] >= target:
            raise Reached

    try:
        Trainer(model, cfg, callbacks=[check]).fit(ArrayBatches((x,), y))
    except Reached:
        return spent
    return {**spent, "seconds": None}


def bare_time_to(target: float, cfg: TrainConfig, data: tuple[np.ndarray, ...]) -> dict[str, Any]:
    x, y, xt, yt = data
    torch.manual_seed(0)
    model = create_model("cnn-resnet", 10, **cfg.model_args)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = -(-len(y) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=steps * cfg.epochs)
    xf, yf, test_x, test_y = as_float(x), torch.from_numpy(y), as_float(xt), torch.from_numpy(yt)
    seconds = 0.0
    for epoch in range(1, cfg.epochs + 1):
        seconds += bare_epoch(model, opt, xf, yf, cfg.batch_size, sched)
        acc = accuracy(model, test_x, test_y)
        if acc >= target:
            return {"seconds": seconds, "epoch": epoch, "accuracy": acc}
    return {"seconds": None, "epoch": cfg.epochs, "accuracy": acc}


def time_to_99(args: argparse.Namespace) -> dict[str, Any]:
    data = load_mnist(args.mnist, 60_000)
    sets = [f"num_threads={args.threads}"] + ([f"epochs={args.epochs}"] if args.epochs else [])
    cfg = resolve_config("cnn-resnet", sets=sets)
    torch.set_num_threads(args.threads)
    return {
        "epochs_scheduled": cfg.epochs,
        "trainer": trainer_time_to(0.99, cfg, data),
        "bare": bare_time_to(0.99, cfg, data),
    }


def show(result: dict[str, Any]) -> None:
    print(f"MNIST, first {result['n']} digits, {result['threads']} threads")
    print(f"{'model':<11}{'batch':>6}{'loop':>30}{'samples/s':>11}{'/cpu-s':>9}")
    loops = [
        ("bare", "bare PyTorch loop (float)"),
        ("trainer", "Trainer (uint8), no augment"),
        ("trainer_augmented", "Trainer, family's augment"),
    ]
    for t in result["throughput"]:
        for key, label in loops:
            wall, cpu = t[f"{key}_samples_per_s"], t[f"{key}_samples_per_cpu_s"]
            print(f"{t['model']:<11}{t['batch_size']:>6}{label:>30}{wall:>11.0f}{cpu:>9.0f}")
        print(f"{t['model']:<11}{'':>6}{'trainer / bare (goal >= 0.85)':>30}"
              f"{t['ratio']:>11.3f}{t['ratio_cpu']:>9.3f}")  # fmt: skip
    if "time_to_99" in result:
        for name in ("trainer", "bare"):
            r = result["time_to_99"][name]
            when = f"{r['seconds']:.0f} s, epoch {r['epoch']}" if r["seconds"] else "not reached"
            print(f"cnn-resnet to 99% test accuracy, {name:<8} {when} (acc {r['accuracy']:.4f})")
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mnist", type=Path, default=SHARED / "mnist.npz")
    parser.add_argument("--n", type=int, default=10_000, help="training digits per run")
    parser.add_argument(
        "--models", default="cnn-fast,cnn-small", help="families to compare (comma-separated)"
    )
    parser.add_argument("--batch-size", type=int, default=0, help="0: each family's own")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (median kept)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both")
    parser.add_argument("--time-to-99", action="store_true", help="also the long cnn-resnet run")
    parser.add_argument("--epochs", type=int, default=0, help="cnn-resnet schedule length")
    args = parser.parse_args()
    x, y, _, _ = load_mnist(args.mnist, args.n)
    result: dict[str, Any] = {
        "bench": "train_throughput",
        "n": len(y),
        "threads": args.threads,
        "throughput": [throughput(args, name, x, y) for name in args.models.split(",")],
    }
    if args.time_to_99:
        result["time_to_99"] = time_to_99(args)
    show(result)


if __name__ == "__main__":
    main()
