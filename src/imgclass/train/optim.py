"""Optimizers and learning-rate schedules, built from a TrainConfig.

Schedules advance per batch (one-cycle, cosine, constant, each with an optional linear
warm-up) or per epoch on the monitored value (reduce-on-plateau); ``Schedule`` hides
the difference from the trainer and keeps a state_dict for checkpoints.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch
    from torch import nn

    from imgclass.train.config import TrainConfig


def make_optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """The configured optimizer over the parameters that are not frozen."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def warmup_cosine(warmup_steps: int, total_steps: int, cosine: bool) -> Any:
    """Multiplier of the base lr at a step: a linear ramp over ``warmup_steps``, then
    constant or a cosine decay to zero at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not cosine:
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


class Schedule:
    """The learning-rate schedule of one training phase of ``epochs`` x ``steps``."""

    def __init__(
        self, opt: torch.optim.Optimizer, cfg: TrainConfig, steps: int, epochs: int
    ) -> None:
        import torch.optim.lr_scheduler as sched

        self.kind = cfg.schedule
        self.opt = opt
        self.base_lrs = [float(g["lr"]) for g in opt.param_groups]
        total = max(1, steps * epochs)
        warmup_steps = round(cfg.warmup * steps)
        self.impl: Any
        if self.kind == "onecycle":
            pct = min(0.95, cfg.warmup / epochs) if cfg.warmup else 0.3
            self.impl = sched.OneCycleLR(
                opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total, pct_start=pct
            )
        elif self.kind == "plateau":
            mode: Literal["min", "max"] = "max" if cfg.monitor.endswith("accuracy") else "min"
            self.impl = sched.ReduceLROnPlateau(opt, mode=mode, factor=0.5, patience=2)
        else:
            factor = warmup_cosine(warmup_steps, total, cosine=self.kind == "cosine")
            self.impl = sched.LambdaLR(opt, factor)

    def resize(self, cfg: TrainConfig, steps: int, epochs: int, done: int) -> None:
        """The same schedule over ``epochs`` x ``steps`` instead, continuing after the
        ``done`` steps already taken (a time budget re-planned the phase)."""
        if self.kind == "plateau":
            return
        for group, lr in zip(self.opt.param_groups, self.base_lrs, strict=True):
            group["lr"] = lr
        fresh = Schedule(self.opt, cfg, steps, epochs)
        with warnings.catch_warnings():  # stepping ahead without optimizer steps, on purpose
            warnings.simplefilter("ignore")
            for _ in range(done):
                fresh.impl.step()
        self.impl = fresh.impl

    def step_batch(self) -> None:
        """After each optimizer step."""
        if self.kind != "plateau":
            self.impl.step()

    def step_epoch(self, monitored: float | None) -> None:
        """After each epoch, with the monitored value (reduce-on-plateau only)."""
        if self.kind == "plateau" and monitored is not None:
            self.impl.step(monitored)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = self.impl.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.impl.load_state_dict(state)
