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
- A time budget (``time_limit``, ``imgclass.train.budget``): each phase starts with a
  few measured steps, then its epochs, schedule, warm-up and patience are fitted to the
  time left; after each epoch the plan is corrected from the measured epoch time, and
  no training step starts past the deadline.
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
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import nn

from imgclass.errors import ModelError
from imgclass.progress import progress
from imgclass.text import plural
from imgclass.train import distributed as ddp
from imgclass.train.augment import augment_images, augment_sequences
from imgclass.train.batches import limit_steps, prefetch, to_device
from imgclass.train.budget import BudgetPlanner, Speed, TimeBudget, fitted_config
from imgclass.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from imgclass.train.config import TrainConfig
from imgclass.train.optim import Schedule, make_optimizer
from imgclass.train.precision import Precision

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
    budget: dict[str, Any] | None = None  # what a time budget bought (BudgetPlanner.report)


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
    """``num_threads`` or, on CPU, the usable cores shared among the processes, fixed
    for the calling (training) thread now.

    torch sizes a thread's OpenMP pool lazily, at that thread's first parallel
    operation, from a process-wide count that the last ``torch.set_num_threads`` call
    in any thread wrote. The batch prefetch thread sets 1 for itself before the first
    step, so a fresh process (``imgclass train``) trained every step on one thread.
    ``torch.get_num_threads()`` does that lazy initialisation here, before any other
    thread starts, so later calls elsewhere no longer reach this thread.
    """
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    elif device.type == "cpu":
        torch.set_num_threads(max(1, usable_cpus() // dist.world))
    torch.get_num_threads()  # sizes this thread's pool now (see above)


class _Fixed:
    """No schedule: the learning rate stays as set (the budget's measuring steps)."""

    def step_batch(self) -> None:
        return None


# The budget's measuring steps: PROBE_STEPS timed steps after an untimed one (a fixed
# number, so that a run is repeatable), fewer (at least 2) only when they would take
# more than PROBE_SHARE of the time left.
PROBE_STEPS = 5
PROBE_SHARE = 0.03


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
        budget: TimeBudget | None = None,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.asked = cfg  # as given: a time budget refits self.cfg, never beyond this
        self.checkpoint_dir = checkpoint_dir
        self.callbacks = list(callbacks)
        self.dist = dist
        self.device = ddp.pick_device(cfg.device, dist)
        self.amp = Precision.for_run(cfg.precision, cfg.channels_last, self.device, model)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.image_aug = cfg.augment.image_active
        self.sequence_aug = cfg.augment.sequence_active
        self.generator = torch.Generator()
        self.samples_seen = 0
        if budget is None and cfg.time_limit > 0:
            budget = TimeBudget(cfg.time_limit)
        self.planner = BudgetPlanner(budget, cfg) if budget is not None else None
        self.phases: list[Phase] = []
        self.step_limit = 0  # steps per epoch when the budget cuts one short (0: all)
        self.steps_done = 0
        self.cut_short = False
        self.walls: list[tuple[int, float]] = []  # (phase, wall seconds) of each epoch

    # --- the loop ----------------------------------------------------------------------

    def fit(
        self, train: Batches, valid: Batches | None = None, *, resume: bool = False
    ) -> TrainResult:
        """Train on ``train``, validating on ``valid`` after each epoch.

        resume: continue from ``checkpoint_dir/last.pt`` when it exists.
        """
        configure_threads(self.cfg, self.dist, self.device)
        self.model.to(self.device)
        self.amp.prepare(self.model)
        self._log_device()
        self.phases = plan_phases(self.cfg, self.model)
        result = TrainResult(monitor=self._monitor(valid))
        best = Best(result.monitor, self.cfg.min_delta)
        saved = self._restore(best, result) if resume else None
        start = int(saved["epoch"]) if saved else 0
        steps = train.steps(self.cfg.batch_size, self.dist.world)
        running: _Running | None = None
        began = time.perf_counter() - result.seconds
        epoch = start
        while epoch < self.cfg.epochs:  # a time budget may move the end
            index = next(i for i, p in enumerate(self.phases) if p.start <= epoch < p.stop)
            if running is None or running.index != index:
                running = self._start_phase(self.phases, index, steps, saved, train, valid)
                if epoch >= self.cfg.epochs:  # the budget left no time for this phase
                    break
            epoch_began = time.monotonic()
            row = self._run_epoch(running, train, valid, epoch)
            running.schedule.step_epoch(row.get(result.monitor))
            result.history.append(row)
            best.update(row[result.monitor], epoch + 1, self.model)
            result.seconds = time.perf_counter() - began
            result.stopped_early = self._patience_over(epoch + 1, best, self.phases[index])
            self._checkpoint(epoch + 1, running, result, best)
            self._report(epoch, row)
            if result.stopped_early:
                log.info(
                    "early stopping: %s has not improved for %s",
                    result.monitor,
                    plural(self.cfg.patience, "epoch"),
                )
                break
            epoch += 1
            self._replan(running, epoch, steps, time.monotonic() - epoch_began, valid)
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

    def _log_device(self) -> None:
        """Say how the steps run where it is not the plain CPU path."""
        if self.device.type != "cpu" or self.amp.dtype is not None or self.amp.channels_last:
            layout = ", channels-last" if self.amp.channels_last else ""
            log.info("training on %s, %s%s", self.device, self.amp.name, layout)

    def _finish(self, result: TrainResult, best: Best) -> TrainResult:
        self.amp.restore(self.model)
        result.best_epoch, result.best_score = best.epoch, best.score
        result.samples_seen = self.samples_seen
        if self.planner is not None:
            done = len(result.history)
            result.budget = self.planner.report(
                self.cfg.epochs, done, self.steps_done, self.cut_short
            )
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
        self,
        phases: list[Phase],
        index: int,
        steps: int,
        saved: dict[str, Any] | None,
        train: Batches | None = None,
        valid: Batches | None = None,
    ) -> _Running:
        """Freeze or unfreeze, then a fresh optimizer and schedule (or the checkpoint's);
        under a time budget, the phase's length is fitted first (``_plan_budget``)."""
        phase = phases[index]
        model: Any = self.model
        if hasattr(model, "freeze_backbone"):
            if phase.frozen:
                model.freeze_backbone()
            else:
                model.unfreeze()
        opt = make_optimizer(self.model, self.cfg, phase.lr)
        net = ddp.wrap(self.model, self.dist, self.device)
        resumed = (
            saved is not None
            and int(saved.get("phase", 0)) == index
            and saved["epoch"] > phase.start
        )
        if self.planner is not None and train is not None and not resumed:
            probe = _Running(index, net, opt, cast(Schedule, _Fixed()))
            self._plan_budget(probe, train, valid, steps)
            phase = phases[index]
        schedule = Schedule(opt, self.cfg, self.step_limit or steps, phase.stop - phase.start)
        if resumed and saved is not None:
            opt.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["scheduler"])
            self.amp.load_state_dict(saved.get("scaler") or {})
        if len(phases) > 1:
            log.info(
                "phase %d: epochs %d-%d, lr %.3g, backbone %s",
                index + 1,
                phase.start + 1,
                phase.stop,
                phase.lr,
                "frozen" if phase.frozen else "trained",
            )
        return _Running(index, net, opt, schedule)

    # --- the time budget (imgclass.train.budget) -----------------------------------------

    def _plan_budget(
        self, probe: _Running, train: Batches, valid: Batches | None, steps: int
    ) -> None:
        """Fit the phase ``probe.index`` and the later ones into the time left: measure a
        few steps and an evaluation, plan, then refit ``self.cfg`` and ``self.phases``."""
        planner = self.planner
        assert planner is not None  # only called under a budget
        index = probe.index
        if planner.training_end() - time.monotonic() <= 0 and index > 0:
            log.warning("time budget: no time left for phase %d: skipped", index + 1)
            self._set_phases(index, 0)
            return
        step_seconds = self._probe(probe, train)
        eval_seconds = self._eval_speed(valid if valid is not None else train)
        left = planner.training_end() - time.monotonic()
        step_seconds, eval_seconds, left = self._agreed(step_seconds, eval_seconds, left)
        valid_n = -(-len(valid) // self.dist.world) if valid is not None else 0
        overhead = 0.05 if self.checkpoint_dir is not None else 0.01
        speed = Speed(step_seconds, eval_seconds, overhead)
        caps = [p.stop - p.start for p in plan_phases(self.asked, self.model)[index:]]
        plan = planner.plan(speed, steps, valid_n, caps, self.cfg.batch_size, left=left)
        self.step_limit = plan.steps if plan.steps < steps else 0
        self._set_phases(index, plan.epochs)
        planner.set_deadline(valid_n * eval_seconds, overhead)

    def _set_phases(self, index: int, epochs: int) -> None:
        """Phase ``index`` now lasts ``epochs`` (0: dropped, with the later ones); later
        phases keep their length after it. ``self.cfg`` follows (fitted_config)."""
        phases = self.phases
        phases[index].stop = phases[index].start + epochs
        if epochs == 0:
            del phases[index + 1 :]
        for before, after in zip(phases[index:], phases[index + 1 :], strict=False):
            length = after.stop - after.start
            after.start, after.stop = before.stop, before.stop + length
        frozen = (
            phases[0].stop if phases[0].frozen and len(phases) > 1 else self.asked.frozen_epochs
        )
        self.cfg = fitted_config(self.asked, max(1, phases[-1].stop), frozen)
        if epochs == 0:
            self.cfg.epochs = phases[index].start

    def _probe(self, running: _Running, train: Batches) -> float:
        """Seconds per training step, timed over the first batches of a pass: real steps
        (they train the model) at a 25th of the learning rate, as one-cycle starts."""
        cfg, dist = self.cfg, self.dist
        planner = self.planner
        assert planner is not None
        groups = running.opt.param_groups
        lrs = [g["lr"] for g in groups]
        for g in groups:
            g["lr"] /= 25
        self.model.train()
        rank = dist.rank  # the measuring steps' own augmentation and dropout streams
        self.generator = torch.Generator().manual_seed(epoch_seed(cfg.seed, running.index, 4, rank))
        torch.manual_seed(epoch_seed(cfg.seed, running.index, 5, rank))
        most = PROBE_SHARE * planner.budget.left()
        times: list[float] = []
        batches = train.epoch(
            cfg.batch_size, epoch_seed(cfg.seed, running.index, 3), dist.rank, dist.world
        )
        began = last = time.monotonic()
        try:
            for inputs, labels in batches:
                self._step(running, inputs, labels)
                self._sync()
                now = time.monotonic()
                times.append(now - last)
                last = now
                self.samples_seen += len(labels)
                timed = len(times) - 1
                too_long = timed >= 2 and now - began > most and not dist.active
                if timed >= PROBE_STEPS or too_long:
                    break
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
            for g, lr in zip(groups, lrs, strict=True):
                g["lr"] = lr
        timed_steps = sorted(times[1:] or times)
        return timed_steps[len(timed_steps) // 2]  # the median: warm-up outliers ignored

    @torch.no_grad()
    def _eval_speed(self, batches: Batches) -> float:
        """Seconds per evaluated example, timed over the second batch of an evaluation
        pass (the first warms up), or the first when there is only one."""
        self.model.eval()
        size = max(self.cfg.batch_size, 256)
        times: list[tuple[float, int]] = []
        source = batches.epoch(size, 0, self.dist.rank, self.dist.world, train=False)
        last = time.monotonic()
        try:
            for inputs, labels in source:
                with self.amp.autocast():
                    self.model(*to_device(inputs, self.device, self.amp.channels_last))
                self._sync()
                now = time.monotonic()
                times.append((now - last, len(labels)))
                last = now
                if len(times) == 2:
                    break
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        seconds, n = times[-1] if times else (0.0, 1)
        return seconds / max(1, n)

    def _agreed(self, *values: float) -> tuple[float, ...]:
        """Under torchrun, every process's measures reduced alike so that all plan the
        same steps: the slowest times, the least time left (the last value)."""
        if not self.dist.active:
            return values
        gathered = ddp.all_gather_objects(list(values), self.dist)
        columns = list(zip(*gathered, strict=True))
        return (*(max(c) for c in columns[:-1]), min(columns[-1]))

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _replan(
        self,
        running: _Running,
        done: int,
        steps: int,
        seconds: float,
        valid: Batches | None,
    ) -> None:
        """After an epoch: move the current phase's end if the measured epochs say the
        plan does not fit (or was too cautious), and resize its schedule to match."""
        planner = self.planner
        if planner is None:
            return
        self.walls.append((running.index, seconds))
        phase = self.phases[running.index]
        if done >= phase.stop:  # the run is over, or the next phase plans itself
            return
        in_phase = [w for i, w in self.walls if i == running.index]
        mean = sum(in_phase) / len(in_phase)
        left = planner.training_end() - time.monotonic()
        mean, left = self._agreed(mean, left)
        cap = [p.stop - p.start for p in plan_phases(self.asked, self.model)][running.index]
        stop = planner.after_epoch(done, phase.stop, phase.start + cap, mean, left)
        if stop != phase.stop:
            self._set_phases(running.index, stop - phase.start)
            if stop > done:
                epochs = stop - phase.start
                taken = (done - phase.start) * (self.step_limit or steps)
                running.schedule.resize(self.cfg, self.step_limit or steps, epochs, taken)
        self._update_deadline(valid)

    def _update_deadline(self, valid: Batches | None) -> None:
        planner = self.planner
        if planner is not None:
            valid_n = -(-len(valid) // self.dist.world) if valid is not None else 0
            planner.set_deadline(valid_n * planner.eval_seconds_per_sample, 0.05)

    def _time_is_up(self) -> bool:
        """Whether the budget's deadline for training steps has passed (one process
        only: under torchrun every process must take the same steps, and the plan,
        agreed after each epoch, is what keeps them on time)."""
        if self.planner is None or self.dist.active:
            return False
        if time.monotonic() < self.planner.train_deadline:
            return False
        if not self.cut_short:
            log.warning("time budget: the deadline cut this epoch short")
        self.cut_short = True
        return True

    def _train_epoch(self, running: _Running, train: Batches, epoch: int) -> dict[str, float]:
        cfg, dist = self.cfg, self.dist
        self.model.train()
        seed = epoch_seed(cfg.seed, epoch, 0)
        source = limit_steps(
            train.epoch(cfg.batch_size, seed, dist.rank, dist.world), lambda: self.step_limit
        )
        check_at, taken = self._growth_check(running), 0
        batches = prefetch(source, self._workers(train), pin=self.device.type == "cuda")
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        shown_n = -(-len(train) // dist.world)
        if self.step_limit:
            shown_n = min(shown_n, self.step_limit * cfg.batch_size)
        bar = self._bar(shown_n, f"epoch {epoch + 1}/{cfg.epochs}")
        started, shown = time.perf_counter(), time.perf_counter()
        lr = running.opt.param_groups[0]["lr"]
        with bar:
            for inputs, labels in batches:
                if self._time_is_up():
                    break
                lr = running.opt.param_groups[0]["lr"]  # what this step trains with
                sums += self._step(running, inputs, labels)
                self.steps_done += 1
                bar.update(len(labels))
                taken += 1
                if taken == check_at:
                    self._grow_cut_epoch(running, train, taken, started, bar)
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

    def _growth_check(self, running: _Running) -> int:
        """After how many steps a cut epoch (a budget that bought less than one epoch)
        looks again at its speed: a quarter of the way (0: no second look). Single
        process and last phase only: processes must agree on their steps, and an earlier
        phase's time belongs to the later ones."""
        if self.planner is None or not self.step_limit or self.dist.active:
            return 0
        if running.index != len(self.phases) - 1:
            return 0
        return max(PROBE_STEPS, self.step_limit // 4)

    def _grow_cut_epoch(
        self, running: _Running, train: Batches, done: int, started: float, bar: Any
    ) -> None:
        """Give the cut epoch the steps its measured speed affords (BudgetPlanner
        .grown_steps), with its schedule stretched over them from where it is."""
        assert self.planner is not None
        per_step = (time.perf_counter() - started) / max(1, done)
        full = train.steps(self.cfg.batch_size, self.dist.world)
        new = self.planner.grown_steps(done, self.step_limit, full, per_step)
        if new == self.step_limit:
            return
        self.step_limit = new  # read by limit_steps after each batch
        running.schedule.resize(self.cfg, new, 1, done)
        if getattr(bar, "total", None) is not None:  # tqdm, or the log lines when piped
            bar.total = min(-(-len(train) // self.dist.world), new * self.cfg.batch_size)

    def _bar(self, total: int, desc: str) -> Any:
        """tqdm on rank 0 (silent when quiet or piped), none elsewhere."""
        quiet = {} if self.dist.main else {"disable": True}
        return progress(total=total, desc=desc, unit=" samples", leave=False, **quiet)

    def _step(
        self, running: _Running, inputs: tuple[torch.Tensor, ...], labels: torch.Tensor
    ) -> torch.Tensor:
        """One optimisation step; returns (loss sum, correct, count) as float64 (3,)."""
        x = self._augment(to_device(inputs, self.device, self.amp.channels_last))
        y = labels.to(self.device, non_blocking=True)
        with self.amp.autocast():
            logits = running.net(*x)
            loss = self.loss_fn(logits, y)
        running.opt.zero_grad(set_to_none=True)
        self.amp.backward_step(loss, running.opt, self.cfg.grad_clip, self.model)
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
            y = labels.to(self.device, non_blocking=True)
            with self.amp.autocast():
                logits = self.model(*to_device(inputs, self.device, self.amp.channels_last))
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
                "config": self.asked.to_dict(),
                "budget_plan": self._budget_state(),
                "scaler": self.amp.state_dict(),
            },
        )

    def _budget_state(self) -> dict[str, Any] | None:
        """The budget's plan (fitted epochs, phases, step limit) for a resumed run."""
        if self.planner is None:
            return None
        return {
            "epochs": self.cfg.epochs,
            "frozen_epochs": self.cfg.frozen_epochs,
            "phases": [[p.start, p.stop] for p in self.phases],
            "step_limit": self.step_limit,
        }

    def _resume_plan(self, saved: dict[str, Any]) -> None:
        """Continue under the plan the killed run had made (its phases' lengths)."""
        plan = saved.get("budget_plan")
        if self.planner is None or not plan:
            return
        for phase, (start, stop) in zip(self.phases, plan["phases"], strict=False):
            phase.start, phase.stop = int(start), int(stop)
        del self.phases[len(plan["phases"]) :]
        self.cfg = fitted_config(self.asked, int(plan["epochs"]), int(plan["frozen_epochs"]))
        self.step_limit = int(plan["step_limit"])

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
        self._resume_plan(saved)
        log.info("resuming after epoch %d of %d", saved["epoch"], self.cfg.epochs)
        return saved

    def _check_same_run(self, saved: dict[str, Any], folder: Path | None) -> None:
        before = saved.get("config", {})
        if before.get("model", self.cfg.model) != self.cfg.model:
            raise ModelError(
                f"{folder}: the checkpoint is of {before['model']}, not {self.cfg.model}"
            )
        changed = sorted(
            k for k, v in self.asked.to_dict().items() if k in before and before[k] != v
        )
        if changed:
            log.warning("resuming with changed settings: %s", ", ".join(changed))

    def _report(self, epoch: int, row: dict[str, float]) -> None:
        if self.dist.main:
            shown = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch")
            log.info("epoch %d/%d %s", epoch + 1, self.cfg.epochs, shown)
        for callback in self.callbacks:
            callback(epoch + 1, row)
