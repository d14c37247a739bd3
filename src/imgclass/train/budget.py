"""A training time budget: ``imgclass train --time-limit 10m``.

The user says how long the whole run may take (data loading, training, ONNX export and
the bundle's evaluation included); the trainer measures its own speed on the first
batches of each training phase and fits the schedule into what is left:

- ``parse_duration``: ``90s``, ``10m``, ``1.5h``, ``1h30m`` or plain seconds.
- ``TimeBudget``: the clock of the run and the time kept for what follows training
  (export, evaluation through the bundle on the valid and test splits, tracking).
- ``plan_phase``: how many epochs of a phase fit (never more than configured: the
  epochs are a cap), or the share of one epoch when not even one fits.
- ``fitted_config``: the configuration with the schedule scaled to the planned epochs
  (warm-up, early-stopping patience, the frozen epochs of transfer models), so that
  one-cycle and cosine schedules run their whole course within the budget.
- ``BudgetPlanner``: the trainer's side: phases planned and re-planned after each
  epoch from measured times, the deadline for the training steps, and the record of
  what the budget bought (``report``), which goes into metrics.json and MLflow.

The arithmetic is pure; the trainer does the measuring (``Trainer._probe``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imgclass.errors import ConfigError

if TYPE_CHECKING:
    from imgclass.train.config import TrainConfig

log = logging.getLogger(__name__)

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([hms])", re.IGNORECASE)
_WHOLE = re.compile(r"\s*(?:(?:\d+(?:\.\d*)?|\.\d+)\s*[hms]\s*)+", re.IGNORECASE)
_PLAIN = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*")

# Kept for what follows training, besides the measured evaluation: ONNX export, two
# bundle writes, tracking (seconds), and a share of the budget for the unforeseen.
FIXED_RESERVE = 2.0
RESERVE_SHARE = 0.04
# The bundle is evaluated on valid + test when written and on test again for the run's
# report (MLflow), and ONNX Runtime runs about as fast as torch's eval on CPU.
EVAL_PASSES = 2.5
# An unfrozen (fine-tuning) step of a transfer model against a frozen one, until the
# second phase measures its own speed: the backbone's backward pass costs about twice
# its forward.
UNFROZEN_COST = 3.0


def parse_duration(value: Any, what: str = "--time-limit") -> float:
    """Seconds from ``90s``, ``10m``, ``1.5h``, ``1h30m`` or a plain number of seconds;
    ConfigError naming ``what`` for anything else, zero or negative."""
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{what}: expected a duration such as 90s, 10m or 1h, got {value!r}")
    plain = isinstance(value, str) and _PLAIN.fullmatch(value)
    if isinstance(value, int | float) or plain:
        seconds = float(value)
    elif isinstance(value, str) and _WHOLE.fullmatch(value):
        seconds = sum(float(n) * UNITS[u.lower()] for n, u in _PART.findall(value))
    else:
        raise ConfigError(
            f"{what} {value!r}: expected a duration such as 90s, 10m, 1.5h, 1h30m or a "
            "number of seconds"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{what} must be a positive duration, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``75`` -> ``"75 s"``, ``600`` -> ``"10 min"``, ``5400`` -> ``"1.5 h"``."""
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 120:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


@dataclass
class TimeBudget:
    """The clock of one run limited to ``seconds``.

    started: ``time.monotonic()`` when the run began (the CLI's start, so that loading
    the data counts); after_samples: examples the bundle is evaluated on after training
    (valid + test), to keep time for it; after_seconds: more to keep for what follows
    the bundle (recording the run in MLflow).
    """

    seconds: float
    started: float = field(default_factory=time.monotonic)
    after_samples: int = 0
    after_seconds: float = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.seconds - self.elapsed()

    @property
    def end(self) -> float:
        """The monotonic time by which the bundle must be written."""
        return self.started + self.seconds

    def reserve(self, eval_seconds_per_sample: float) -> float:
        """Seconds kept after training for export, evaluation and tracking."""
        evaluation = EVAL_PASSES * eval_seconds_per_sample * self.after_samples
        return FIXED_RESERVE + RESERVE_SHARE * self.seconds + evaluation + self.after_seconds


@dataclass
class Speed:
    """What a phase costs, as measured: one training step, one evaluated example, and
    the per-epoch overhead (checkpoint, callbacks, the best weights' copy)."""

    step_seconds: float
    eval_seconds_per_sample: float
    epoch_overhead: float = 0.0

    def epoch_seconds(self, steps: int, valid_samples: int) -> float:
        """One whole epoch: its steps, validation and overhead."""
        validation = valid_samples * self.eval_seconds_per_sample
        return steps * self.step_seconds + validation + self.epoch_overhead


@dataclass
class PhasePlan:
    """epochs of the phase that fit, and the steps of each (fewer than a whole epoch's
    only when not even one epoch fits; epochs is then 1)."""

    epochs: int
    steps: int
    full_steps: int

    @property
    def fraction(self) -> float:
        """Share of an epoch each planned epoch covers (1.0 = whole epochs)."""
        return self.steps / max(1, self.full_steps)


def plan_phase(
    available: float, speed: Speed, steps: int, valid_samples: int, cap: int
) -> PhasePlan:
    """The epochs (at most ``cap``) whose steps, validation and overhead fit in
    ``available`` seconds; when not even one epoch fits, one epoch cut to the steps that
    do (at least one step: a bundle needs a trained model)."""
    epoch = speed.epoch_seconds(steps, valid_samples)
    whole = int(available // epoch) if epoch > 0 else cap
    if whole >= 1:
        return PhasePlan(min(cap, whole), steps, steps)
    room = available - valid_samples * speed.eval_seconds_per_sample - speed.epoch_overhead
    cut = int(room // speed.step_seconds) if speed.step_seconds > 0 else steps
    return PhasePlan(1, max(1, min(steps, cut)), steps)


def scaled(value: float, planned: int, cap: int) -> float:
    """An epoch-counted setting shrunk as the epochs were (``planned`` of ``cap``)."""
    return value * planned / cap if cap > planned else value


def fitted_config(cfg: TrainConfig, epochs: int, frozen_epochs: int) -> TrainConfig:
    """``cfg`` with its schedule fitted to ``epochs`` in all (``frozen_epochs`` of them
    with a frozen backbone): the warm-up and early-stopping patience shrink in
    proportion, so one-cycle keeps its shape and patience stays a share of the run."""
    patience = cfg.patience
    if patience:
        patience = max(1, round(scaled(patience, epochs, cfg.epochs)))
    return dataclasses.replace(
        cfg,
        epochs=epochs,
        frozen_epochs=frozen_epochs,
        warmup=scaled(cfg.warmup, epochs, cfg.epochs),
        patience=patience,
    )


def phase_share(available: float, caps: list[int], costs: list[float]) -> float:
    """The part of ``available`` for the first of the remaining phases, in proportion to
    each phase's configured epochs times its relative cost per epoch."""
    weights = [c * k for c, k in zip(caps, costs, strict=True)]
    total = sum(weights)
    return available * weights[0] / total if total > 0 else available


@dataclass
class BudgetPlanner:
    """The trainer's budget: plans each phase, re-plans after each epoch, and records
    what was planned and done.

    cfg: the configuration as the user gave it (its epochs are the cap).
    """

    budget: TimeBudget
    cfg: TrainConfig
    eval_seconds_per_sample: float = 0.0
    samples_per_second: float = 0.0
    planned: list[PhasePlan] = field(default_factory=list)
    replans: int = 0
    train_deadline: float = math.inf
    _grown: bool = False

    def training_end(self) -> float:
        """Monotonic time by which the training (validation included) must be over."""
        return self.budget.end - self.budget.reserve(self.eval_seconds_per_sample)

    def plan(
        self,
        speed: Speed,
        steps: int,
        valid_samples: int,
        caps: list[int],
        batch_size: int,
        later_cost: float = UNFROZEN_COST,
        left: float | None = None,
    ) -> PhasePlan:
        """Plan the phase starting now: ``caps``, the configured epochs of this phase and
        of the later ones (whose epochs cost ``later_cost`` times this phase's until
        measured). left: seconds until ``training_end`` (measured here when None; under
        torchrun the processes pass the smallest of theirs so that all agree)."""
        self.eval_seconds_per_sample = speed.eval_seconds_per_sample
        self.samples_per_second = batch_size / speed.step_seconds if speed.step_seconds else 0
        available = (self.training_end() - time.monotonic()) if left is None else left
        share = phase_share(max(0.0, available), caps, [1.0] + [later_cost] * (len(caps) - 1))
        plan = plan_phase(share, speed, steps, valid_samples, caps[0])
        self.planned.append(plan)
        self._log(plan, caps[0], share, steps)
        return plan

    def _log(self, plan: PhasePlan, cap: int, share: float, steps: int) -> None:
        phase = f"phase {len(self.planned)}: " if cap != self.cfg.epochs else ""
        speed = f"{self.samples_per_second:.0f} samples/s, {self.budget.elapsed():.1f} s gone"
        if plan.fraction < 1:
            log.warning(
                "time budget %s: %s%.1f s of training buy %d of %d batches (%.0f%% of one "
                "epoch, %s): training on a fraction of an epoch",
                format_duration(self.budget.seconds), phase, share, plan.steps, steps,
                100 * plan.fraction, speed,
            )  # fmt: skip
        else:
            log.info(
                "time budget %s: %s%.1f s of training at %s fit %d of %d epochs",
                format_duration(self.budget.seconds), phase, share, speed, plan.epochs, cap,
            )  # fmt: skip

    def set_deadline(self, valid_seconds: float, overhead: float) -> None:
        """The last moment a training step may start: validation and the epoch's overhead
        still have to fit before ``training_end``."""
        self.train_deadline = self.training_end() - valid_seconds - overhead

    def after_epoch(self, done: int, stop: int, cap: int, epoch_seconds: float, left: float) -> int:
        """The phase's new end after ``done`` epochs of it, from the measured wall time
        of its epochs so far: earlier when the rest would not fit; later (up to ``cap``
        epochs of the phase, once) when the first plan was too cautious."""
        remaining = stop - done
        fit = int(max(0.0, left) // epoch_seconds) if epoch_seconds > 0 else remaining
        if fit < remaining:
            self.replans += 1
            log.info(
                "time budget: %d more epoch(s) fit, not %d: schedule shortened", fit, remaining
            )
            return done + fit
        if not self._grown and fit > remaining and stop < cap:
            self._grown = True
            new = min(cap, done + fit)
            if new > stop:
                self.replans += 1
                log.info("time budget: %d more epoch(s) fit: schedule lengthened", new - done)
                return new
        return stop

    def grown_steps(self, done: int, limit: int, full: int, step_seconds: float) -> int:
        """The steps of a cut epoch (``limit`` of ``full``) once ``done`` of them took
        ``step_seconds`` each: more, up to the whole epoch, when the steps left before the
        deadline are at least a fifth more than planned (the probe ran while the machine
        was busier, or before it warmed up); else ``limit``. Asked once per cut epoch."""
        if step_seconds <= 0 or limit >= full:
            return limit
        fit = done + int(max(0.0, self.train_deadline - time.monotonic()) // step_seconds)
        if fit < 1.2 * limit:
            return limit
        new = min(full, fit)
        self.replans += 1
        self.planned[-1] = PhasePlan(self.planned[-1].epochs, new, full)
        log.info(
            "time budget: steps are faster than the probe measured: %d of %d batches fit, "
            "not %d", new, full, limit,
        )  # fmt: skip
        return new

    def report(self, planned: int, done: int, steps_done: int, stopped: bool) -> dict[str, Any]:
        """What the budget bought (metrics.json's ``budget``; MLflow ``budget_*``):
        ``planned`` and ``done`` epochs, steps done, whether the deadline cut an epoch."""
        fraction = min((p.fraction for p in self.planned), default=1.0)
        return {
            "time_limit_seconds": self.budget.seconds,
            "epochs_cap": self.cfg.epochs,
            "epochs_planned": planned,
            "epochs_done": done,
            "fraction_of_epoch": fraction,
            "steps_done": steps_done,
            "samples_per_second": self.samples_per_second,
            "stopped_by_deadline": stopped,
            "replans": self.replans,
            "reserved_seconds": self.budget.reserve(self.eval_seconds_per_sample),
        }
