"""A transfer model's frozen phase trained on cached embeddings, then fine-tuning if asked.

Teachable Machine's recipe: while the backbone is frozen, compute each training
image's features once (``imgclass.train.embeddings``, cached beside the run), train the
head on them for ``frozen_epochs`` (thousands of samples a second instead of 10-15
photos), then, only when ``epochs`` > ``frozen_epochs``, unfreeze and fine-tune every
weight for the remaining epochs with the ordinary trainer at ``lr x unfreeze_lr_factor``.
The model keeps its backbone throughout, so the bundle holds the whole network and
serving is unchanged.

Used when ``embedding_cache`` is on, the model has a frozen phase and one process
trains (under torchrun the ordinary per-epoch path runs).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imgclass.data.store import PreparedDataset, manifest_hash
from imgclass.train.config import TrainConfig
from imgclass.train.embeddings import FeatureExtractor, make_key, split_features
from imgclass.train.optim import Schedule, make_optimizer
from imgclass.train.trainer import (
    Batches,
    Best,
    Trainer,
    TrainResult,
    configure_threads,
    epoch_seed,
)

log = logging.getLogger(__name__)

Features = tuple[np.ndarray, np.ndarray]  # float32 (n, F), int64 labels (n,)


def uses_cache(cfg: TrainConfig, model: Any, dist_active: bool) -> bool:
    """Whether this run trains its frozen phase on cached embeddings."""
    return (
        cfg.embedding_cache
        and cfg.frozen_epochs > 0
        and hasattr(model, "features")
        and hasattr(model, "freeze_backbone")
        and not dist_active
    )


def cached_sets(
    trainer: Trainer, ds: PreparedDataset, n: int, held: np.ndarray | None, folder: Path | None
) -> tuple[Features, Features | None]:
    """(train, valid) features and labels: the first ``n`` training examples' views less
    the held-out ones (which, seen once, validate), else the valid split's, else none."""
    cfg, model = trainer.cfg, trainer.model
    extract = FeatureExtractor(model)
    digest = manifest_hash(ds.path)
    args = (model, cfg.model, cfg.model_args)
    key = make_key(digest, "train", n, *args, cfg.cache_views, cfg.augment, cfg.seed)
    feats, _ = split_features(ds, key, folder, extract, cfg.augment)
    labels = ds.labels("train")[:n].astype(np.int64)
    keep = np.arange(n) if held is None else np.setdiff1d(np.arange(n), held)
    train = (feats[:, keep].reshape(-1, feats.shape[2]), np.tile(labels[keep], key.views))
    if held is not None:
        return train, (feats[0, held], labels[held])
    if "valid" not in ds.splits or not ds.size("valid"):
        return train, None
    vkey = make_key(digest, "valid", ds.size("valid"), *args)
    vfeats, _ = split_features(ds, vkey, folder, extract)
    return train, (vfeats[0], ds.labels("valid").astype(np.int64))


def fit_cached(
    trainer: Trainer,
    ds: PreparedDataset,
    n: int,
    held: np.ndarray | None,
    train: Batches,
    valid: Batches | None,
    *,
    folder: Path | None,
    resume: bool = False,
) -> TrainResult:
    """The whole fit: features (cached), the head on them, then any fine-tuning epochs
    on images (``train``/``valid`` batches) through the ordinary trainer."""
    cfg, model = trainer.cfg, trainer.model
    model_any: Any = model
    began = time.perf_counter()
    configure_threads(cfg, trainer.dist, trainer.device)
    model.to(trainer.device)
    model_any.freeze_backbone()
    train_set, valid_set = cached_sets(trainer, ds, n, held, folder)
    epochs = min(cfg.frozen_epochs, cfg.epochs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a linear head's steps are too small to share; more threads wait
    try:
        result = fit_head(model_any.head, cfg, train_set, valid_set, epochs, trainer)
    finally:
        torch.set_num_threads(threads)
    result.seconds = time.perf_counter() - began
    if cfg.epochs > epochs:
        result = fine_tune(trainer, train, valid, result, resume)
    result.seconds = time.perf_counter() - began
    return result


def fine_tune(
    trainer: Trainer, train: Batches, valid: Batches | None, head: TrainResult, resume: bool
) -> TrainResult:
    """Every weight trained for the remaining epochs, numbered after the head's; the
    head-only weights come back when they scored better and ``restore_best`` is on."""
    cfg, model = trainer.cfg, trainer.model
    offset = len(head.history)
    tune_cfg = dataclasses.replace(
        cfg, epochs=cfg.epochs - offset, frozen_epochs=0, lr=cfg.lr * cfg.unfreeze_lr_factor
    )
    log.info("fine-tuning every weight for %d epoch(s) at lr %.3g", tune_cfg.epochs, tune_cfg.lr)
    before = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    tuner = Trainer(
        model,
        tune_cfg,
        checkpoint_dir=trainer.checkpoint_dir,
        callbacks=[_shifted(cb, offset) for cb in trainer.callbacks],
        dist=trainer.dist,
    )
    more = tuner.fit(train, valid, resume=resume)
    for row in more.history:
        row["epoch"] += offset
    merged = dataclasses.replace(head, history=[*head.history, *more.history])
    merged.stopped_early, merged.samples_seen = more.stopped_early, more.samples_seen
    best = Best(head.monitor, cfg.min_delta)
    best.score, best.epoch = head.best_score, head.best_epoch
    if more.best_score is not None and best.update(
        more.best_score, more.best_epoch + offset, model
    ):
        merged.best_epoch, merged.best_score = best.epoch, best.score
    elif cfg.restore_best and head.best_score is not None:
        model.load_state_dict(before)
        log.info("fine-tuning did not improve %s: keeping the head-only weights", head.monitor)
    return merged


def _shifted(callback: Callable[[int, dict[str, float]], None], offset: int) -> Any:
    return lambda epoch, row: callback(epoch + offset, row)


def fit_head(
    head: nn.Module,
    cfg: TrainConfig,
    train: Features,
    valid: Features | None,
    epochs: int,
    trainer: Trainer,
) -> TrainResult:
    """Train ``head`` on features as the trainer trains a model on images: the run's
    optimizer, schedule, label smoothing, seeded shuffles, validation, early stopping,
    best epoch restored; rows and callbacks like the trainer's."""
    device = trainer.device
    x, y = torch.from_numpy(train[0]).to(device), torch.from_numpy(train[1]).to(device)
    steps = max(1, math.ceil(len(y) / cfg.batch_size))
    opt = make_optimizer(head, cfg, cfg.lr)
    schedule = Schedule(opt, cfg, steps, epochs)
    monitor = cfg.monitor if valid is not None else cfg.monitor.replace("val_", "train_")
    result = TrainResult(monitor=monitor)
    best = Best(monitor, cfg.min_delta)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    for epoch in range(epochs):
        started = time.perf_counter()
        row: dict[str, float] = {"epoch": epoch + 1}
        row.update(_head_epoch(head, x, y, cfg, epoch, opt, schedule, loss_fn))
        if valid is not None:
            row["val_loss"], row["val_accuracy"] = _head_score(head, valid, device)
        row["seconds"] = time.perf_counter() - started
        schedule.step_epoch(row.get(monitor))
        result.history.append(row)
        best.update(row[monitor], epoch + 1, head)
        result.samples_seen += len(y)
        _report(trainer.callbacks, epoch, epochs, row)
        stalled = epoch + 1 - best.epoch >= cfg.patience
        if cfg.patience and epoch + 1 < epochs and stalled:
            result.stopped_early = True
            log.info("early stopping: %s has not improved for %d epochs", monitor, cfg.patience)
            break
    result.best_epoch, result.best_score = best.epoch, best.score
    if cfg.restore_best and best.state is not None:
        head.load_state_dict(best.state)
    return result


def _head_epoch(
    head: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    epoch: int,
    opt: torch.optim.Optimizer,
    schedule: Schedule,
    loss_fn: nn.Module,
) -> dict[str, float]:
    """One shuffled pass over the features; the trainer's row of training numbers."""
    head.train()
    order = torch.randperm(
        len(y), generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, 0))
    )
    torch.manual_seed(epoch_seed(cfg.seed, epoch, 2))  # dropout
    started = time.perf_counter()
    total = correct = 0.0
    lr = opt.param_groups[0]["lr"]
    for start in range(0, len(y), cfg.batch_size):
        idx = order[start : start + cfg.batch_size].to(x.device)
        logits = head(x[idx])
        loss = loss_fn(logits, y[idx])
        lr = opt.param_groups[0]["lr"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(head.parameters(), cfg.grad_clip)
        opt.step()
        schedule.step_batch()
        total += float(loss.detach()) * len(idx)
        correct += float((logits.argmax(1) == y[idx]).sum())
    seconds = time.perf_counter() - started
    return {
        "train_loss": total / max(len(y), 1),
        "train_accuracy": correct / max(len(y), 1),
        "lr": float(lr),
        "samples_per_second": len(y) / max(seconds, 1e-9),
    }


@torch.no_grad()
def _head_score(head: nn.Module, valid: Features, device: torch.device) -> tuple[float, float]:
    """(mean cross-entropy without smoothing, accuracy) of the head on features."""
    head.eval()
    x, y = torch.from_numpy(valid[0]).to(device), torch.from_numpy(valid[1]).to(device)
    logits = head(x)
    loss = nn.functional.cross_entropy(logits.float(), y).item()
    return float(loss), float((logits.argmax(1) == y).float().mean())


def _report(
    callbacks: Sequence[Callable[[int, dict[str, float]], None]],
    epoch: int,
    epochs: int,
    row: dict[str, float],
) -> None:
    shown = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch")
    log.info("head epoch %d/%d %s", epoch + 1, epochs, shown)
    for callback in callbacks:
        callback(epoch + 1, row)
