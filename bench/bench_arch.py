"""Which bitmap architecture gives the most accuracy per second of CPU training?

For each candidate (the seeds' two-conv CNN ``cnn-small``, the former default
``cnn-resnet``, a stride-2-stem ResNet, and variants of ``cnn-fast``) this prints its
multiply-adds and parameters per 28x28 image, its training speed through imgclass's
Trainer (wall samples/s and samples per CPU-second, the latter less disturbed by other
processes on a shared machine) and its test accuracy after a fixed training budget,
on one or more suites:

  doodles20:  the 20 Pictionary categories of the real Quick, Draw! drawings in
              ../shared/data (the built-in doodles' categories), 60 per class for
              training, 20 per class for the test (as bench_accuracy.py);
  doodles345: the same for all 345 categories;
  mnist:      the official 60k/10k split (the ``mnist`` recipe).

The data goes through ``imgclass data prepare`` (the real recipes); training is
in-process. A budget of ``--seconds`` becomes a number of epochs the way a time limit
does: a calibration epoch measures the candidate's speed on the first examples, then
the family's own recipe (optimizer, one-cycle schedule, augmentation, label smoothing)
runs over as many epochs as fit. cnn-resnet gets ``--baseline-factor`` times the budget
(3 by default), so a row of another model that matches its accuracy meets the goal of
"cnn-resnet's top-1 at <= 1/3 of its training time". ``--epochs N`` trains every
candidate for N epochs instead. The last rows vary cnn-fast's batch size (64, 128, 256,
the learning rate scaled by sqrt(batch / 64)) at widths 48 and 32. Every family trains
with the augmentation ``imgclass train`` would give it on that suite (an "auto" preset
settled by the prepared dataset's recipe: affine for drawings and digits). Prints one
table per suite and one JSON line.

  python bench/bench_arch.py --suite doodles20 --seconds 20          # short
  python bench/bench_arch.py --suite all --seconds 120               # the long version
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_accuracy import PICTIONARY, prepare_doodles, prepare_mnist  # noqa: E402
from imgclass.data.store import PreparedDataset  # noqa: E402
from imgclass.models import create_model  # noqa: E402
from imgclass.train.batches import ArrayBatches  # noqa: E402
from imgclass.train.config import TrainConfig, data_preset, resolve_config  # noqa: E402
from imgclass.train.trainer import Trainer  # noqa: E402

SUITES = ("doodles20", "doodles345", "mnist")


@dataclass
class Candidate:
    """A row of the table: a registered family with model arguments and settings."""

    label: str
    model: str
    sets: list[str] = field(default_factory=list)
    baseline: bool = False  # gets --baseline-factor times the budget


CANDIDATES = [
    Candidate("cnn-small (seeds' recipe)", "cnn-small"),
    Candidate("cnn-resnet", "cnn-resnet", baseline=True),
    Candidate("cnn-resnet, stride-2 stem", "cnn-resnet", ["model.stem_stride=2"]),
    Candidate("cnn-fast (default)", "cnn-fast"),
    Candidate("cnn-fast width 32", "cnn-fast", ["model.width=32"]),
    Candidate("cnn-fast width 64", "cnn-fast", ["model.width=64"]),
    Candidate("cnn-fast depths 1,1,1", "cnn-fast", ["model.depths=[1,1,1]"]),
    Candidate("cnn-fast plain 3x3 convs", "cnn-fast", ["model.separable=false"]),
    Candidate("cnn-fast not channels-last", "cnn-fast", ["model.channels_last=false"]),
    # batch size, the learning rate scaled by sqrt(batch / 64) (AdamW), at widths 48 and 32
    Candidate("cnn-fast batch 128", "cnn-fast", ["batch_size=128", "lr=4.2e-3"]),
    Candidate("cnn-fast batch 256", "cnn-fast", ["batch_size=256", "lr=6e-3"]),
    Candidate(
        "cnn-fast w32 batch 128", "cnn-fast", ["model.width=32", "batch_size=128", "lr=4.2e-3"]
    ),
    Candidate(
        "cnn-fast w32 batch 256", "cnn-fast", ["model.width=32", "batch_size=256", "lr=6e-3"]
    ),
]


def count_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass on one image of ``shape`` (C, H, W): those of
    the convolutions and linear layers, which are nearly all of them."""
    total = 0

    def conv(m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(m, nn.Conv2d)
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += int(out[0].numel()) * k

    def linear(m: nn.Module, _inp: Any, _out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(m, nn.Linear)
        total += m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return total


@dataclass
class Suite:
    name: str
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    classes: int
    recipe: dict[str, Any]  # the prepared dataset's recipe: it settles an "auto" augmentation


def load_suite(name: str, tmp: Path, limit: int, seed: int = 0) -> Suite:
    """Prepare ``name`` through the real pipeline; train = the prepared train + valid
    splits (at most ``limit`` examples, a seeded random subset), test = its test split."""
    if name == "mnist":
        data = prepare_mnist(tmp)
    else:
        data = prepare_doodles(tmp, PICTIONARY if name == "doodles20" else None)
    with PreparedDataset.open(data) as ds:
        parts = [ds.load(s) for s in ("train", "valid") if s in ds.splits]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts]).astype(np.int64)
        xt, yt = ds.load("test")
        classes = len(ds.classes)
        recipe = dict(ds.recipe)
    if limit and limit < len(y):
        keep = np.sort(np.random.default_rng(seed).permutation(len(y))[:limit])
        x, y = x[keep], y[keep]
    return Suite(name, (x, y), (xt, yt.astype(np.int64)), classes, recipe)


def config(c: Candidate, suite: Suite, threads: int, extra: list[str]) -> TrainConfig:
    """The candidate's settings; an "auto" augmentation is settled by the suite's recipe
    as ``imgclass train`` does (affine for drawings and digits)."""
    sets = [*c.sets, f"num_threads={threads}", "restore_best=false", *extra]
    return resolve_config(c.model, sets=sets, recipe=suite.recipe)


def build(c: Candidate, cfg: TrainConfig, suite: Suite, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(c.model, suite.classes, **cfg.model_args)  # type: ignore[no-any-return]


def calibrate(c: Candidate, suite: Suite, threads: int, n: int, clock: str) -> float:
    """Training samples per second (of wall time, or of CPU time if ``clock`` is "cpu")
    of ``c`` over one epoch on the first ``n`` examples (after a few warm-up batches),
    with its recipe's augmentation and batch size."""
    x, y = suite.train
    cfg = config(c, suite, threads, ["epochs=1"])
    model = build(c, cfg, suite, 0)
    Trainer(model, cfg).fit(ArrayBatches((x[:256],), y[:256]))  # warm-up
    timer = time.process_time if clock == "cpu" else time.perf_counter
    start = timer()
    Trainer(model, cfg).fit(ArrayBatches((x[:n],), y[:n]))
    return min(n, len(y)) / (timer() - start)


def run_candidate(c: Candidate, suite: Suite, args: argparse.Namespace) -> dict[str, Any]:
    """Train ``c`` within its budget; its speed, size and test accuracy."""
    x, y = suite.train
    budget = args.seconds * (args.baseline_factor if c.baseline else 1)
    if args.epochs:
        epochs, speed = args.epochs, 0.0
    else:
        n = min(len(y), args.calibration)
        speed = calibrate(c, suite, args.threads, n, args.clock)
        epochs = max(1, round(budget * speed / len(y)))
    cfg = config(c, suite, args.threads, [f"epochs={epochs}"])
    model = build(c, cfg, suite, args.seed)
    shape = (int(x.shape[3]) if x.ndim == 4 else 1, int(x.shape[1]), int(x.shape[2]))
    macs = count_macs(model, shape)
    trainer = Trainer(model, cfg)
    cpu = time.process_time()
    result = trainer.fit(ArrayBatches((x,), y))
    cpu = time.process_time() - cpu
    seconds = sum(r["seconds"] for r in result.history)
    _, acc = trainer.evaluate(ArrayBatches((suite.test[0],), suite.test[1]))
    return {
        "suite": suite.name,
        "candidate": c.label,
        "model": c.model,
        "settings": " ".join(c.sets),
        "batch_size": cfg.batch_size,
        "augment": cfg.augment.preset,
        "macs": macs,
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": epochs,
        "budget_s": None if args.epochs else budget,
        "clock": args.clock,
        "cpu_s": cpu,
        "train_s": seconds,
        "samples_per_s": result.samples_seen / max(seconds, 1e-9),
        "samples_per_cpu_s": result.samples_seen / max(cpu, 1e-9),
        "calibrated_samples_per_s": speed or None,
        "accuracy": acc,
    }


def show_header(suite: Suite) -> None:
    n_train, n_test = len(suite.train[1]), len(suite.test[1])
    print(
        f"\n{suite.name}: {n_train} training, {n_test} test images, {suite.classes} classes, "
        f"augmentation {data_preset(suite.recipe)[0]} where the family's is auto"
    )
    head = f"{'candidate':<28}{'MMACs':>7}{'params':>9}{'epochs':>7}{'train s':>8}{'cpu s':>7}"
    print(head + f"{'samples/s':>10}{'/cpu-s':>8}{'top-1':>8}", flush=True)


def show_row(r: dict[str, Any]) -> None:
    print(
        f"{r['candidate']:<28}{r['macs'] / 1e6:>7.2f}{r['params']:>9,}{r['epochs']:>7}"
        f"{r['train_s']:>8.1f}{r['cpu_s']:>7.1f}{r['samples_per_s']:>10.0f}{r['samples_per_cpu_s']:>8.0f}"
        f"{r['accuracy']:>8.4f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", choices=[*SUITES, "all"], default="doodles20")
    parser.add_argument("--seconds", type=float, default=30.0, help="training budget each")
    parser.add_argument("--baseline-factor", type=float, default=3.0, help="cnn-resnet's x")
    parser.add_argument("--epochs", type=int, default=0, help="fixed epochs instead")
    parser.add_argument("--limit", type=int, default=0, help="training images at most")
    parser.add_argument("--calibration", type=int, default=2048, help="images to time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="what the budget counts: cpu = CPU seconds (with --threads 1 this is fair "
        "on a machine other processes are using; wall-clock speeds there are not)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="comma-separated candidate numbers (0-based)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chosen = [int(i) for i in args.only.split(",")] if args.only else range(len(CANDIDATES))
    rows: list[dict[str, Any]] = []
    for name in SUITES if args.suite == "all" else (args.suite,):
        with tempfile.TemporaryDirectory() as tmp:
            suite = load_suite(name, Path(tmp), args.limit, args.seed)
        show_header(suite)
        for i in chosen:
            rows.append(run_candidate(CANDIDATES[i], suite, args))
            show_row(rows[-1])
    print(json.dumps({"bench": "arch", "threads": args.threads, "clock": args.clock, "rows": rows}))


if __name__ == "__main__":
    main()
