"""One trainer for the torch families, on in-memory uint8 arrays.

AdamW/Adam/SGD; one-cycle, cosine or reduce-on-plateau schedules; label smoothing;
seeded shuffling and augmentation; early stopping that restores the best weights;
a checkpoint every epoch (tensors and numbers only, loadable with
``torch.load(weights_only=True)``) from which ``resume`` continues exactly.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imgclass.progress import progress
from imgclass.train.augment import photo_augment, random_affine
from imgclass.train.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W[, C]) -> float32 (n, C, H, W) in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


def as_inputs(x: Any) -> tuple[torch.Tensor, ...]:
    """Model inputs as tensors: images (uint8 array) or (sequences, lengths) for RNNs."""
    if isinstance(x, tuple):
        seqs, lengths = x
        return torch.from_numpy(np.ascontiguousarray(seqs)).float(), torch.from_numpy(
            lengths
        ).long()
    return (to_tensor(x),)


def set_threads(cfg: TrainConfig) -> None:
    torch.set_num_threads(cfg.num_threads or max(1, os.cpu_count() or 1))


def make_optimizer(
    model: nn.Module, cfg: TrainConfig, lr: float | None = None
) -> torch.optim.Optimizer:
    """The configured optimizer over the parameters that are not frozen."""
    params = [p for p in model.parameters() if p.requires_grad]
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def make_scheduler(
    opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int, epochs: int | None = None
) -> Any:
    """The configured schedule over ``epochs`` (default: the whole run)."""
    epochs = max(1, cfg.epochs if epochs is None else epochs)
    lr = opt.param_groups[0]["lr"]
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch
        )
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)
    return None


class Trainer:
    """Fits a torch classifier; see the module docstring."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        checkpoint_dir: Path | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.checkpoint_dir = checkpoint_dir
        self.on_epoch = on_epoch
        self.generator = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)

    def fit(
        self,
        x: Any,
        y: np.ndarray,
        x_val: Any = None,
        y_val: np.ndarray | None = None,
        resume: bool = False,
    ) -> TrainResult:
        """x: uint8 images (n, H, W[, C]), or (sequences (n, T, F), lengths (n,)) for RNNs."""
        cfg = self.cfg
        set_threads(cfg)
        xt, yt = as_inputs(x), torch.from_numpy(y.astype(np.int64))
        has_val = x_val is not None and y_val is not None and len(y_val) > 0
        xv = as_inputs(x_val) if has_val else None
        yv = torch.from_numpy(y_val.astype(np.int64)) if has_val and y_val is not None else None
        steps = max(1, -(-len(yt) // cfg.batch_size))
        done = self._checkpoint_epoch() if resume else 0
        opt, sched = self._phase(steps, done)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        result, start_epoch = TrainResult(), 0
        best: tuple[float, dict[str, torch.Tensor] | None] = (-1.0, None)
        if resume:
            start_epoch, best = self._load_checkpoint(opt, sched, result)
        started = time.perf_counter() - result.seconds
        for epoch in range(start_epoch, cfg.epochs):
            if self._two_phase() and epoch == cfg.frozen_epochs and epoch > start_epoch:
                opt, sched = self._phase(steps, epoch)  # unfreeze: all weights, lower lr
            t0 = time.perf_counter()
            train_loss, train_acc = self._epoch(xt, yt, opt, sched, loss_fn, epoch)
            row = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "train_accuracy": train_acc,
                "lr": opt.param_groups[0]["lr"],
                "seconds": time.perf_counter() - t0,
                "samples_per_s": len(yt) / (time.perf_counter() - t0),
            }
            if xv is not None and yv is not None:
                row["val_loss"], row["val_accuracy"] = self.evaluate(xv, yv, loss_fn)
                if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    sched.step(row["val_loss"])
            result.history.append(row)
            score = row.get("val_accuracy", -row["train_loss"])
            if score > best[0]:
                best = (score, {k: v.detach().clone() for k, v in self.model.state_dict().items()})
                result.best_epoch = epoch + 1
            result.seconds = time.perf_counter() - started
            self._save_checkpoint(epoch + 1, opt, sched, result, best)
            log.info(
                "epoch %d/%d %s",
                epoch + 1,
                cfg.epochs,
                " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"),
            )
            if self.on_epoch:
                self.on_epoch(epoch + 1, row)
            if cfg.patience and epoch + 1 - result.best_epoch >= cfg.patience:
                log.info("early stopping: no improvement for %d epochs", cfg.patience)
                break
        if best[1] is not None:
            self.model.load_state_dict(best[1])
        return result

    def _two_phase(self) -> bool:
        return self.cfg.frozen_epochs > 0 and hasattr(self.model, "freeze_backbone")

    def _phase(self, steps: int, epoch: int) -> tuple[torch.optim.Optimizer, Any]:
        """Optimizer and schedule for the phase ``epoch`` is in (frozen backbone, then all)."""
        cfg = self.cfg
        if not self._two_phase():
            opt = make_optimizer(self.model, cfg)
            return opt, make_scheduler(opt, cfg, steps)
        model: Any = self.model
        if epoch < cfg.frozen_epochs:
            model.freeze_backbone()
            opt = make_optimizer(self.model, cfg)
            return opt, make_scheduler(opt, cfg, steps, cfg.frozen_epochs)
        model.unfreeze()
        opt = make_optimizer(self.model, cfg, cfg.lr * cfg.unfreeze_lr_factor)
        return opt, make_scheduler(opt, cfg, steps, cfg.epochs - cfg.frozen_epochs)

    def _checkpoint_epoch(self) -> int:
        path = (self.checkpoint_dir or Path(".")) / "last.pt"
        return int(torch.load(path, weights_only=True)["epoch"]) if path.exists() else 0

    def _epoch(
        self,
        xt: tuple[torch.Tensor, ...],
        yt: torch.Tensor,
        opt: torch.optim.Optimizer,
        sched: Any,
        loss_fn: nn.Module,
        epoch: int,
    ) -> tuple[float, float]:
        self.model.train()
        order = torch.randperm(len(yt), generator=self.generator)
        total_loss, correct, seen = 0.0, 0, 0
        bar = progress(
            total=len(yt), desc=f"epoch {epoch + 1}/{self.cfg.epochs}", unit=" ex", leave=False
        )
        with bar:
            for start in range(0, len(yt), self.cfg.batch_size):
                idx = order[start : start + self.cfg.batch_size]
                xb, yb = [t[idx] for t in xt], yt[idx]
                if self.cfg.augment == "affine" and len(xb) == 1:
                    xb[0] = random_affine(xb[0], self.generator)
                elif self.cfg.augment == "photo" and len(xb) == 1:
                    xb[0] = photo_augment(xb[0], self.generator)
                logits = self.model(*xb)
                loss = loss_fn(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None and not isinstance(
                    sched, torch.optim.lr_scheduler.ReduceLROnPlateau
                ):
                    sched.step()
                total_loss += loss.item() * len(idx)
                correct += int((logits.argmax(1) == yb).sum())
                seen += len(idx)
                bar.update(len(idx))
                bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        return total_loss / seen, correct / seen

    @torch.no_grad()
    def evaluate(
        self, xv: tuple[torch.Tensor, ...], yv: torch.Tensor, loss_fn: nn.Module
    ) -> tuple[float, float]:
        self.model.eval()
        losses, correct = 0.0, 0
        for start in range(0, len(yv), 1024):
            logits = self.model(*[t[start : start + 1024] for t in xv])
            losses += float(loss_fn(logits, yv[start : start + 1024])) * len(logits)
            correct += int((logits.argmax(1) == yv[start : start + 1024]).sum())
        return losses / len(yv), correct / len(yv)

    def _save_checkpoint(
        self,
        epoch: int,
        opt: torch.optim.Optimizer,
        sched: Any,
        result: TrainResult,
        best: tuple[float, dict[str, torch.Tensor] | None],
    ) -> None:
        if self.checkpoint_dir is None:
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else {},
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": result.history,
            "best_epoch": result.best_epoch,
            "seconds": result.seconds,
            "best_score": best[0],
            "best_model": best[1] or {},
        }
        tmp = self.checkpoint_dir / "last.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_dir / "last.pt")

    def _load_checkpoint(
        self, opt: torch.optim.Optimizer, sched: Any, result: TrainResult
    ) -> tuple[int, tuple[float, dict[str, torch.Tensor] | None]]:
        path = (self.checkpoint_dir or Path(".")) / "last.pt"
        if not path.exists():
            log.warning("no checkpoint at %s: starting from scratch", path)
            return 0, (-1.0, None)
        state = torch.load(path, weights_only=True)
        self.model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state["scheduler"]:
            sched.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        result.history = list(state["history"])
        result.best_epoch = int(state["best_epoch"])
        result.seconds = float(state["seconds"])
        log.info("resuming after epoch %d", state["epoch"])
        return int(state["epoch"]), (float(state["best_score"]), state["best_model"] or None)
