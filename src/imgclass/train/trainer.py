"""One trainer for every torch family (CNNs, stroke RNNs, transfer models).

- Adam, AdamW or SGD; one-cycle, cosine, constant or reduce-on-plateau schedules with
  an optional warm-up (``imgclass.train.optim``); label smoothing; gradient clipping.
- Transfer models (those with ``freeze_backbone``/``unfreeze``) train in two phases:
  the head alone for ``frozen_epochs``, then every weight at ``lr * unfreeze_lr_factor``,
  each phase with its own optimizer and schedule.
- Validation after every epoch; early stopping on ``monitor`` and, at the end, the best
  epoch's weights restored.
- Repeatable: every epoch's shuffle, augmentation and dropout come from generators
  seeded by (seed, epoch, process), so the same seed gives the same weights, and a run
  resumed from its checkpoint continues exactly as if it had never stopped.
- A checkpoint after every epoch (``imgclass.train.checkpoint``), written by rank 0.
- Data parallel under torchrun (``imgclass.train.distributed``): each process trains
  on its shard, DistributedDataParallel averages the gradients, losses and accuracies
  are summed over processes, batch-norm statistics follow rank 0.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from imgclass.errors import ModelError
from imgclass.progress import progress
from imgclass.text import plural
from imgclass.train import distributed as ddp
from imgclass.train.augment import augment_images, augment_sequences
from imgclass.train.batches import prefetch, to_device
from imgclass.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from imgclass.train.config import TrainConfig
from imgclass.train.optim import Schedule, make_optimizer

log = logging.getLogger(__name__)
Callback = Callable[[int, dict[str, float]], None]


class Batches(Protocol):
    """What the trainer reads (``ArrayBatches``, ``StoreBatches``)."""

    kind: str

    def __len__(self) -> int: ...

    def steps(self, batch_size: int, world: int = 1) -> int: ...

    def epoch(
        self, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1, train: bool = True
    ) -> Any: ...


@dataclass
class Phase:
    """Epochs [start, stop) trained at ``lr``, with the backbone frozen or not."""

    start: int
    stop: int
    lr: float
    frozen: bool = False


@dataclass
class TrainResult:
    """What a fit produced. history: one row per epoch (epoch, train_loss,
    train_accuracy, [val_loss, val_accuracy,] lr, samples_per_second, seconds)."""

    history: list[dict[str, float]] = field(default_factory=list)
    monitor: str = "train_loss"
    best_epoch: int = 0
    best_score: float | None = None
    seconds: float = 0.0
    stopped_early: bool = False
    samples_seen: int = 0  # by this process, in this session


@dataclass
class _Running:
    """The current phase's objects."""

    index: int
    net: nn.Module
    opt: torch.optim.Optimizer
    schedule: Schedule


def plan_phases(cfg: TrainConfig, model: nn.Module) -> list[Phase]:
    """One phase, or two for a transfer model with ``frozen_epochs`` > 0."""
    two = cfg.frozen_epochs > 0 and hasattr(model, "freeze_backbone")
    if not two:
        return [Phase(0, cfg.epochs, cfg.lr)]
    cut = min(cfg.frozen_epochs, cfg.epochs)
    phases = [Phase(0, cut, cfg.lr, frozen=True)]
    if cut < cfg.epochs:
        phases.append(Phase(cut, cfg.epochs, cfg.lr * cfg.unfreeze_lr_factor))
    return phases


def epoch_seed(seed: int, epoch: int, *stream: int) -> int:
    """An independent 32-bit seed for (run seed, epoch, stream...)."""
    return int(np.random.SeedSequence([seed, epoch, *stream]).generate_state(1)[0])


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_threads(cfg: TrainConfig, dist: ddp.Dist, device: torch.device) -> None:
    """``num_threads`` or, on CPU, the usable cores shared among the processes."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    elif device.type == "cpu":
        torch.set_num_threads(max(1, usable_cpus() // dist.world))


class Best:
    """The best monitored value so far, its epoch and a CPU copy of its weights."""

    def __init__(self, monitor: str, min_delta: float) -> None:
        self.maximise = monitor.endswith("accuracy")
        self.min_delta = min_delta
        self.epoch = 0
        self.score: float | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, score: float, epoch: int, model: nn.Module) -> bool:
        """Record ``score`` if it improves on the best by more than min_delta."""
        if self.score is not None:
            gain = score - self.score if self.maximise else self.score - score
            if gain <= self.min_delta:
                return False
        self.epoch, self.score = epoch, score
        self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return True

    def to_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "score": self.score, "model": self.state or {}}

    def load(self, state: dict[str, Any]) -> None:
        self.epoch, self.score = int(state["epoch"]), state["score"]
        self.state = state["model"] or None


class Trainer:
    """Fits ``model`` as ``cfg`` says (see the module docstring).

    checkpoint_dir: where last.pt goes (None: no checkpoints). callbacks: called as
    ``fn(epoch, row)`` after each epoch's checkpoint (an exception stops the run, which
    ``fit(resume=True)`` can then continue). dist: this process's place under torchrun.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        *,
        checkpoint_dir: Path | None = None,
        callbacks: Sequence[Callback] = (),
        dist: ddp.Dist = ddp.SINGLE,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.checkpoint_dir = checkpoint_dir
        self.callbacks = list(callbacks)
        self.dist = dist
        self.device = ddp.pick_device(cfg.device, dist)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.image_aug = cfg.augment.image_active
        self.sequence_aug = cfg.augment.sequence_active
        self.generator = torch.Generator()
        self.samples_seen = 0

    # --- the loop ----------------------------------------------------------------------

    def fit(
        self, train: Batches, valid: Batches | None = None, *, resume: bool = False
    ) -> TrainResult:
        """Train on ``train``, validating on ``valid`` after each epoch.

        resume: continue from ``checkpoint_dir/last.pt`` when it exists.
        """
        cfg = self.cfg
        configure_threads(cfg, self.dist, self.device)
        self.model.to(self.device)
        phases = plan_phases(cfg, self.model)
        result = TrainResult(monitor=self._monitor(valid))
        best = Best(result.monitor, cfg.min_delta)
        saved = self._restore(best, result) if resume else None
        start = int(saved["epoch"]) if saved else 0
        steps = train.steps(cfg.batch_size, self.dist.world)
        running: _Running | None = None
        began = time.perf_counter() - result.seconds
        for epoch in range(start, cfg.epochs):
            index = next(i for i, p in enumerate(phases) if p.start <= epoch < p.stop)
            if running is None or running.index != index:
                running = self._start_phase(phases, index, steps, saved)
            row = self._run_epoch(running, train, valid, epoch)
            running.schedule.step_epoch(row.get(result.monitor))
            result.history.append(row)
            best.update(row[result.monitor], epoch + 1, self.model)
            result.seconds = time.perf_counter() - began
            result.stopped_early = self._patience_over(epoch + 1, best, phases[index])
            self._checkpoint(epoch + 1, running, result, best)
            self._report(epoch, row)
            if result.stopped_early:
                log.info(
                    "early stopping: %s has not improved for %s",
                    result.monitor,
                    plural(cfg.patience, "epoch"),
                )
                break
        return self._finish(result, best)

    def _run_epoch(
        self, running: _Running, train: Batches, valid: Batches | None, epoch: int
    ) -> dict[str, float]:
        started = time.perf_counter()
        self._seed(epoch)
        row: dict[str, float] = {"epoch": epoch + 1}
        row.update(self._train_epoch(running, train, epoch))
        ddp.sync_buffers(self.model, self.dist)
        if valid is not None:
            row["val_loss"], row["val_accuracy"] = self.evaluate(valid)
        row["seconds"] = time.perf_counter() - started
        return row

    def _finish(self, result: TrainResult, best: Best) -> TrainResult:
        result.best_epoch, result.best_score = best.epoch, best.score
        result.samples_seen = self.samples_seen
        if self.cfg.restore_best and best.state is not None:
            self.model.load_state_dict(best.state)
            log.info(
                "restored the weights of epoch %d (%s %.4g)", best.epoch, result.monitor, best.score
            )
        return result

    def _monitor(self, valid: Batches | None) -> str:
        monitor = self.cfg.monitor
        if valid is None and monitor.startswith("val_"):
            log.info(
                "no validation data: monitoring %s instead of %s",
                monitor.replace("val_", "train_"),
                monitor,
            )
            return monitor.replace("val_", "train_")
        return monitor

    def _patience_over(self, done: int, best: Best, phase: Phase) -> bool:
        """No improvement for ``patience`` epochs (counted from the phase's start)."""
        patience = self.cfg.patience
        return (
            bool(patience)
            and done < self.cfg.epochs
            and done - max(best.epoch, phase.start) >= patience
        )

    def _seed(self, epoch: int) -> None:
        """Augmentation and dropout streams for this epoch and process."""
        rank = self.dist.rank
        self.generator = torch.Generator().manual_seed(epoch_seed(self.cfg.seed, epoch, 1, rank))
        torch.manual_seed(epoch_seed(self.cfg.seed, epoch, 2, rank))

    # --- phases, optimisation ----------------------------------------------------------

    def _start_phase(
        self, phases: list[Phase], index: int, steps: int, saved: dict[str, Any] | None
    ) -> _Running:
        """Freeze or unfreeze, then a fresh optimizer and schedule (or the checkpoint's)."""
        phase = phases[index]
        model: Any = self.model
        if hasattr(model, "freeze_backbone"):
            if phase.frozen:
                model.freeze_backbone()
            else:
                model.unfreeze()
        opt = make_optimizer(self.model, self.cfg, phase.lr)
        schedule = Schedule(opt, self.cfg, steps, phase.stop - phase.start)
        if (
            saved is not None
            and int(saved.get("phase", 0)) == index
            and saved["epoch"] > phase.start
        ):
            opt.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["scheduler"])
        if len(phases) > 1:
            log.info(
                "phase %d: epochs %d-%d, lr %.3g, backbone %s",
                index + 1,
                phase.start + 1,
                phase.stop,
                phase.lr,
                "frozen" if phase.frozen else "trained",
            )
        return _Running(index, ddp.wrap(self.model, self.dist, self.device), opt, schedule)

    def _train_epoch(self, running: _Running, train: Batches, epoch: int) -> dict[str, float]:
        cfg, dist = self.cfg, self.dist
        self.model.train()
        seed = epoch_seed(cfg.seed, epoch, 0)
        batches = prefetch(
            train.epoch(cfg.batch_size, seed, dist.rank, dist.world), self._workers(train)
        )
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        bar = self._bar(-(-len(train) // dist.world), f"epoch {epoch + 1}/{cfg.epochs}")
        started, shown = time.perf_counter(), time.perf_counter()
        lr = running.opt.param_groups[0]["lr"]
        with bar:
            for inputs, labels in batches:
                lr = running.opt.param_groups[0]["lr"]  # what this step trains with
                sums += self._step(running, inputs, labels)
                bar.update(len(labels))
                if not bar.disable and time.perf_counter() - shown > 0.5:
                    shown = time.perf_counter()
                    loss, correct, n = sums.tolist()
                    bar.set_postfix(loss=f"{loss / n:.3f}", acc=f"{correct / n:.3f}", refresh=False)
        seconds = time.perf_counter() - started
        loss, correct, n = ddp.all_reduce_sum(sums.tolist(), dist, self.device)
        self.samples_seen += int(sums[2])
        return {
            "train_loss": loss / max(n, 1),
            "train_accuracy": correct / max(n, 1),
            "lr": float(lr),  # of the epoch's last step
            "samples_per_second": n / max(seconds, 1e-9),
        }

    def _bar(self, total: int, desc: str) -> Any:
        """tqdm on rank 0 (silent when quiet or piped), none elsewhere."""
        quiet = {} if self.dist.main else {"disable": True}
        return progress(total=total, desc=desc, unit=" samples", leave=False, **quiet)

    def _step(
        self, running: _Running, inputs: tuple[torch.Tensor, ...], labels: torch.Tensor
    ) -> torch.Tensor:
        """One optimisation step; returns (loss sum, correct, count) as float64 (3,)."""
        x = self._augment(to_device(inputs, self.device))
        y = labels.to(self.device, non_blocking=True)
        logits = running.net(*x)
        loss = self.loss_fn(logits, y)
        running.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        running.opt.step()
        running.schedule.step_batch()
        with torch.no_grad():
            correct = (logits.argmax(dim=1) == y).sum()
            return torch.stack(
                [
                    loss.detach().double() * len(y),
                    correct.double(),
                    torch.tensor(float(len(y)), dtype=torch.float64, device=self.device),
                ]
            )

    def _augment(self, x: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if len(x) == 1 and self.image_aug:
            return (augment_images(x[0], self.cfg.augment, self.generator),)
        if len(x) == 2 and self.sequence_aug:
            return augment_sequences(x[0], x[1], self.cfg.augment, self.generator)
        return x

    def _workers(self, train: Batches) -> int:
        """Batches a background thread prepares ahead: ``workers``, or by default 2 when
        they come from disk or go to a GPU, else 1 (measured on 2 CPU cores: about 5%
        faster than loading in the training thread, more when the cores are busy)."""
        if self.cfg.workers >= 0:
            return self.cfg.workers
        return 2 if getattr(train, "streamed", False) or self.device.type == "cuda" else 1

    @torch.no_grad()
    def evaluate(self, batches: Batches, batch_size: int = 0) -> tuple[float, float]:
        """(mean cross-entropy without smoothing, accuracy) over ``batches``, summed over
        every process's shard."""
        self.model.eval()
        size = batch_size or max(self.cfg.batch_size, 256)
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        for inputs, labels in batches.epoch(size, 0, self.dist.rank, self.dist.world, train=False):
            y = labels.to(self.device)
            logits = self.model(*to_device(inputs, self.device))
            losses = nn.functional.cross_entropy(logits.float(), y, reduction="sum")
            sums += torch.stack(
                [
                    losses.double(),
                    (logits.argmax(1) == y).sum().double(),
                    torch.tensor(float(len(y)), dtype=torch.float64, device=self.device),
                ]
            )
        loss, correct, n = ddp.all_reduce_sum(sums.tolist(), self.dist, self.device)
        return loss / max(n, 1), correct / max(n, 1)

    # --- checkpoints -------------------------------------------------------------------

    def _checkpoint(self, done: int, running: _Running, result: TrainResult, best: Best) -> None:
        if self.checkpoint_dir is None or not self.dist.main:
            return
        save_checkpoint(
            self.checkpoint_dir,
            {
                "epoch": done,
                "phase": running.index,
                "model": self.model.state_dict(),
                "optimizer": running.opt.state_dict(),
                "scheduler": running.schedule.state_dict(),
                "rng": rng_state(),
                "history": result.history,
                "best": best.to_state(),
                "seconds": result.seconds,
                "config": self.cfg.to_dict(),
            },
        )

    def _restore(self, best: Best, result: TrainResult) -> dict[str, Any] | None:
        """Model weights, history and best-so-far from last.pt; the rest is applied when
        its phase starts. None when there is no checkpoint yet."""
        folder = self.checkpoint_dir
        saved = load_checkpoint(folder) if folder is not None else None
        if saved is None:
            log.warning("no checkpoint in %s: starting from the beginning", folder)
            return None
        self._check_same_run(saved, folder)
        try:
            self.model.load_state_dict(saved["model"])
        except RuntimeError as exc:
            raise ModelError(f"{folder}: the checkpoint does not fit this model ({exc})") from None
        set_rng_state(saved["rng"])
        result.history = list(saved["history"])
        result.seconds = float(saved.get("seconds", 0.0))
        best.load(saved["best"])
        log.info("resuming after epoch %d of %d", saved["epoch"], self.cfg.epochs)
        return saved

    def _check_same_run(self, saved: dict[str, Any], folder: Path | None) -> None:
        before = saved.get("config", {})
        if before.get("model", self.cfg.model) != self.cfg.model:
            raise ModelError(
                f"{folder}: the checkpoint is of {before['model']}, not {self.cfg.model}"
            )
        changed = sorted(k for k, v in self.cfg.to_dict().items() if k in before and before[k] != v)
        if changed:
            log.warning("resuming with changed settings: %s", ", ".join(changed))

    def _report(self, epoch: int, row: dict[str, float]) -> None:
        if self.dist.main:
            shown = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch")
            log.info("epoch %d/%d %s", epoch + 1, self.cfg.epochs, shown)
        for callback in self.callbacks:
            callback(epoch + 1, row)
