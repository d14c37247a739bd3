"""The pipeline behind ``imgclass train``: dataset -> model -> fit -> ONNX -> bundle.

``train(data_dir, out, cfg)`` opens the prepared dataset, builds ``cfg.model`` through
the registry (its input channels, size or sequence features taken from the data),
fits it (the torch trainer, or scikit-learn's ``fit`` for pca-svm), exports it to ONNX
and writes ``out/bundle`` whose metrics are measured through the bundle itself on the
dataset's valid and test splits, so ``imgclass evaluate`` finds the same numbers.
``out`` also receives ``config.yaml`` (the resolved settings) and ``checkpoints/``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclass.data.store import BatchPlan, PreparedDataset, manifest_hash
from imgclass.errors import ConfigError, DatasetError, ModelError
from imgclass.models import model_info
from imgclass.models.registry import ModelInfo, constructor_keys
from imgclass.train import distributed as ddp
from imgclass.train.batches import ArrayBatches, StoreBatches, stratified_holdout
from imgclass.train.calibrate import calibrate
from imgclass.train.config import TrainConfig, save_config, settle_augment

if TYPE_CHECKING:
    from imgclass.train.trainer import Callback

log = logging.getLogger(__name__)

PHOTO_MODEL = "transfer-efficientnet_lite0"
BITMAP_MODEL = "cnn-fast"


@dataclass
class TrainOutcome:
    """bundle: RUNDIR/bundle (None on processes other than rank 0); metrics: what
    metrics.json holds; seconds: the whole run."""

    bundle: Path | None
    metrics: dict[str, Any]
    seconds: float
    model: str


def default_model(ds: PreparedDataset) -> str:
    """EfficientNet-Lite0 transfer for colour photos, cnn-fast for bitmaps."""
    return PHOTO_MODEL if channels(ds) == 3 else BITMAP_MODEL


def channels(ds: PreparedDataset) -> int:
    return int(ds.image_shape[2]) if len(ds.image_shape) == 3 else 1


def model_arguments(cfg: TrainConfig, info: ModelInfo, ds: PreparedDataset) -> dict[str, Any]:
    """``cfg.model_args`` plus what the data decides (input channels, image side, sequence
    features) for constructors that take them; a conflicting setting is a ConfigError."""
    if info.input_kind == "sequence":
        derived: dict[str, Any] = {"features": 5 if cfg.sequence_format == "stroke5" else 3}
    else:
        derived = {"in_channels": channels(ds), "input_size": int(ds.image_shape[0])}
    accepted = constructor_keys(cfg.model)
    derived = {k: v for k, v in derived.items() if k in accepted}
    for key, value in derived.items():
        if key in cfg.model_args and cfg.model_args[key] != value:
            raise ConfigError(
                f"model.{key}={cfg.model_args[key]} does not fit {ds.path}, whose data needs "
                f"{key}={value}; leave it out"
            )
    return {**cfg.model_args, **derived}


def check_fit(cfg: TrainConfig, info: ModelInfo, ds: PreparedDataset, dist: ddp.Dist) -> None:
    """ConfigError/DatasetError when this model cannot train on this data this way."""
    if "train" not in ds.splits:
        counts = ds.manifest.get("counts")
        raise DatasetError(f"{ds.path} has no training examples (counts per split: {counts})")
    if info.input_kind == "sequence" and not ds.has_strokes:
        raise ConfigError(
            f"{cfg.model} needs strokes; {ds.path} holds bitmaps only "
            "(prepare it from ndjson, .bin or sketch-rnn files)"
        )
    if info.framework == "sklearn" and dist.active:
        raise ConfigError(f"{cfg.model} trains in one process; run it without torchrun")


# --- data ----------------------------------------------------------------------------


def train_count(ds: PreparedDataset, cfg: TrainConfig) -> int:
    n = ds.size("train")
    return min(n, cfg.max_train_samples) if cfg.max_train_samples else n


def holdout(ds: PreparedDataset, cfg: TrainConfig, n: int) -> np.ndarray | None:
    """Indices of the first ``n`` training examples held out for validation, when the
    dataset has no valid split and ``val_fraction`` asks for one."""
    if "valid" in ds.splits or not cfg.val_fraction:
        return None
    _, held = stratified_holdout(ds.labels("train")[:n], cfg.val_fraction, cfg.seed)
    log.info("no valid split: holding out %d training examples for validation", len(held))
    return held


def image_batches(
    ds: PreparedDataset, cfg: TrainConfig
) -> tuple[ArrayBatches | StoreBatches, ArrayBatches | StoreBatches | None]:
    """(train, valid) image batches: in memory up to ``in_memory_mb``, else streamed."""
    n = train_count(ds, cfg)
    held = holdout(ds, cfg, n)
    fits = n * int(np.prod(ds.image_shape)) <= cfg.in_memory_mb << 20
    if fits:
        whole = n == ds.size("train")  # load() decompresses in parallel
        images = ds.load("train")[0] if whole else ds.images("train")[:n]
        labels = ds.labels("train")[:n]
        if held is not None:
            keep = np.setdiff1d(np.arange(n), held)
            images, labels = images[keep], labels[keep]
        train: ArrayBatches | StoreBatches = ArrayBatches((images,), labels)
    else:
        mask = np.zeros(ds.size("train"), bool)
        mask[:n] = True
        if held is not None:
            mask[held] = False
        train = StoreBatches(ds, "train", mask)
    return train, validation_images(ds, cfg, held)


def validation_images(
    ds: PreparedDataset, cfg: TrainConfig, held: np.ndarray | None
) -> ArrayBatches | StoreBatches | None:
    if held is not None:
        return ArrayBatches((ds.images("train")[held],), ds.labels("train")[held])
    if "valid" not in ds.splits:
        return None
    if ds.size("valid") * int(np.prod(ds.image_shape)) <= cfg.in_memory_mb << 20:
        images, labels = ds.load("valid")
        return ArrayBatches((images,), labels)
    return StoreBatches(ds, "valid")


def encode_split(
    ds: PreparedDataset, split: str, cfg: TrainConfig, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A split's drawings as padded sequences (n, max_len, 5|3) and lengths (n,)."""
    from imgclass.data.sequences import encode_drawings

    drawings = ds.all_strokes(split)[:limit]
    raw = ds.manifest.get("stroke_kind") == "raw"
    return encode_drawings(drawings, cfg.sequence_format, cfg.max_len, raw=raw)


def sequence_batches(
    ds: PreparedDataset, cfg: TrainConfig
) -> tuple[ArrayBatches, ArrayBatches | None]:
    """(train, valid) stroke sequences, in memory."""
    n = train_count(ds, cfg)
    seqs, lengths = encode_split(ds, "train", cfg, n)
    labels = ds.labels("train")[:n]
    held = holdout(ds, cfg, n)
    if held is not None:
        keep = np.setdiff1d(np.arange(n), held)
        valid = ArrayBatches((seqs[held], lengths[held]), labels[held])
        return ArrayBatches((seqs[keep], lengths[keep]), labels[keep]), valid
    train = ArrayBatches((seqs, lengths), labels)
    if "valid" not in ds.splits:
        return train, None
    return train, ArrayBatches(encode_split(ds, "valid", cfg), ds.labels("valid"))


# --- fitting -------------------------------------------------------------------------


def fit_torch(
    cfg: TrainConfig,
    info: ModelInfo,
    ds: PreparedDataset,
    out: Path,
    resume: bool,
    dist: ddp.Dist,
    callbacks: Sequence[Callback] = (),
    started: float | None = None,
    reserve: float = 0.0,
) -> tuple[bytes | None, dict[str, Any], dict[str, np.ndarray] | None]:
    """Train with the torch trainer; (ONNX bytes on rank 0, metrics of the fit, the
    trained weights as numpy arrays on rank 0, for the bundle's weights.npz)."""
    import torch

    from imgclass.models import create_model
    from imgclass.onnx_export import export_onnx
    from imgclass.train.cached import fit_cached, uses_cache
    from imgclass.train.trainer import Trainer

    train, valid = (
        sequence_batches(ds, cfg) if info.input_kind == "sequence" else image_batches(ds, cfg)
    )
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, len(ds.classes), **cfg.model_args)
    if not resume:
        init_head(model, cfg, ds)
    trainer = Trainer(
        model,
        cfg,
        checkpoint_dir=out / "checkpoints",
        callbacks=callbacks,
        dist=dist,
        budget=time_budget(cfg, ds, started, reserve),
    )
    if uses_cache(cfg, model, dist.active):
        n = train_count(ds, cfg)
        held = holdout(ds, cfg, n)
        result = fit_cached(trainer, ds, n, held, train, valid, folder=out / "cache", resume=resume)
    else:
        result = trainer.fit(train, valid, resume=resume)
    summary = fit_summary(trainer, result, valid if "valid" not in ds.splits else None)
    if not dist.main:
        return None, summary, None
    sample = train.first(2)
    model.cpu()
    weights = state_arrays(model)
    if info.input_kind == "sequence":
        return export_onnx(model, sample[0].astype(np.float32), sample[1]), summary, weights
    return export_onnx(model, images_to_input(sample[0])), summary, weights


def time_budget(
    cfg: TrainConfig, ds: PreparedDataset, started: float | None, reserve: float = 0.0
) -> Any:
    """The run's TimeBudget (None without ``time_limit``), counted from ``started``
    (``time.monotonic()`` at the command's start), keeping time for evaluating the
    bundle on the valid and test splits after training, and ``reserve`` seconds more."""
    if not cfg.time_limit:
        return None
    from imgclass.train.budget import TimeBudget

    after = sum(ds.size(split) for split in ("valid", "test") if split in ds.splits)
    clock = started if started is not None else time.monotonic()
    return TimeBudget(cfg.time_limit, clock, after, reserve)


def state_arrays(model: Any) -> dict[str, np.ndarray]:
    """A torch model's state_dict as plain numpy arrays (what weights.npz holds)."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def fit_summary(trainer: Any, result: Any, held_out: Any) -> dict[str, Any]:
    """What metrics.json records of a torch fit: the history, the best epoch, timings,
    the held-out validation (when carved from the training split) and, under torchrun,
    each process's share and the agreement of their weights."""
    dist = trainer.dist
    summary: dict[str, Any] = {
        "history": result.history,
        "monitor": result.monitor,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "train_seconds": result.seconds,
        "device": str(trainer.device),
        "precision": trainer.amp.name,
        "channels_last": trainer.amp.channels_last,
        "world_size": dist.world,
    }
    if result.budget is not None:
        summary["budget"] = result.budget
    if held_out is not None:
        loss, accuracy = trainer.evaluate(held_out)
        summary["holdout"] = {"n": len(held_out), "loss": loss, "accuracy": accuracy}
    if dist.active:
        summary["distributed"] = agreement(trainer.model, result.samples_seen, dist)
    return summary


def images_to_input(images: np.ndarray) -> np.ndarray:
    """uint8 (n, H, W[, C]) -> float32 (n, C, H, W) in [0, 1], as models take them."""
    x = images.astype(np.float32) / np.float32(255)
    return x[:, None] if x.ndim == 3 else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def init_head(model: Any, cfg: TrainConfig, ds: PreparedDataset) -> None:
    """Transfer models: start the head from ImageNet's rows for classes ImageNet knows."""
    if not (cfg.imagenet_head and hasattr(model, "init_head_from_imagenet")):
        return
    if cfg.model_args.get("pretrained", True) is False:
        return
    try:
        model.init_head_from_imagenet(ds.classes)  # logs how many classes matched
    except (ModelError, ConfigError) as exc:
        log.info("head not initialised from ImageNet: %s", exc)


def agreement(model: Any, samples: int, dist: ddp.Dist) -> dict[str, Any]:
    """Every process's sample count and weight digest; ModelError if the weights differ."""
    from imgclass.train.distributed import all_gather_objects, weights_digest

    gathered = all_gather_objects((samples, weights_digest(model)), dist)
    digests = [d for _, d in gathered]
    if len(set(digests)) != 1:
        raise ModelError(f"the {dist.world} processes ended with different weights: {digests}")
    return {
        "backend": dist.backend,
        "samples_per_process": [s for s, _ in gathered],
        "weights_sha256": digests[0],
    }


def fit_sklearn(cfg: TrainConfig, ds: PreparedDataset) -> tuple[bytes, dict[str, Any]]:
    """Fit a scikit-learn family on flattened pixels in [0, 1]; (ONNX bytes, fit metrics)."""
    from imgclass.models import create_model
    from imgclass.onnx_export import export_onnx

    n = train_count(ds, cfg)
    images, labels = ds.images("train")[:n], ds.labels("train")[:n]
    x = images.reshape(n, -1).astype(np.float32) / np.float32(255)
    model = create_model(cfg.model, len(ds.classes), **cfg.model_args)
    started = time.perf_counter()
    model.fit(x, labels.astype(np.int64))
    info: dict[str, Any] = {"history": [], "train_seconds": time.perf_counter() - started}
    if hasattr(model, "best_params_"):
        info["search"] = {"best_params": model.best_params_, "cv_accuracy": model.best_score_}
        log.info("grid search: best %s (cv accuracy %.4f)", model.best_params_, model.best_score_)
    return export_onnx(model, x[:2]), info


# --- the bundle ----------------------------------------------------------------------


def input_spec(ds: PreparedDataset, cfg: TrainConfig, info: ModelInfo) -> dict[str, Any]:
    """How a prepared example becomes the model's input (preprocess.json's "input")."""
    size = [int(v) for v in ds.image_shape[:2]]
    if info.input_kind == "sequence":
        from imgclass.data.sequences import DEFAULT_SCALE

        return {
            "kind": "sequence",
            "format": cfg.sequence_format,
            "max_len": cfg.max_len,
            "scale": 1 / DEFAULT_SCALE,
            "size": size,
        }
    return {
        "kind": "image",
        "layout": "flat" if info.framework == "sklearn" else "nchw",
        "channels": channels(ds),
        "size": size,
        "scale": 1 / 255,
    }


def split_predictions(bundle: Any, ds: PreparedDataset, split: str, cfg: TrainConfig) -> np.ndarray:
    """Probabilities (n, K) of the bundle on a whole split, read in batches."""
    if bundle.input_kind == "sequence":
        return np.asarray(bundle.predict_sequences(*encode_split(ds, split, cfg)))
    batches = ds.iter_batches(split, BatchPlan(1024, shuffle=False))
    parts = [bundle.predict_proba(images) for images, _, _ in batches]
    return np.concatenate(parts)


def bundle_metrics(bundle_dir: Path, ds: PreparedDataset, cfg: TrainConfig) -> dict[str, Any]:
    """Valid and test metrics measured through the written bundle (ONNX Runtime)."""
    from imgclass.bundle import load_bundle
    from imgclass.evaluate.metrics import compute_metrics

    bundle = load_bundle(bundle_dir, threads=0)
    out: dict[str, Any] = {}
    for split in ("valid", "test"):
        if split in ds.splits:
            proba = split_predictions(bundle, ds, split, cfg)
            metrics = compute_metrics(
                ds.labels(split), proba, ds.classes, temperature=bundle.temperature
            )
            metrics.pop("confusion", None)  # imgclass evaluate draws it; K x K is large
            out[split] = metrics
    if "test" not in out:
        log.warning("%s has no test split: the bundle has no test metrics", ds.path)
    return out


def model_description(
    cfg: TrainConfig, info: ModelInfo, ds: PreparedDataset, data_dir: Path
) -> dict[str, Any]:
    """model.json's content (save_bundle adds versions, the creation time and the hash)."""
    return {
        "name": cfg.model,
        "family": info.family,
        "framework": info.framework,
        "input_kind": info.input_kind,
        "args": cfg.model_args,
        "num_classes": len(ds.classes),
        "config": cfg.to_dict(),
        "dataset": {
            "path": str(data_dir.resolve()),
            "manifest_sha256": manifest_hash(data_dir),
            "classes": ds.classes,
        },
    }


def write_bundle(
    out: Path,
    onnx_bytes: bytes,
    cfg: TrainConfig,
    info: ModelInfo,
    ds: PreparedDataset,
    data_dir: Path,
    metrics: dict[str, Any],
    weights: dict[str, np.ndarray] | None = None,
) -> Path:
    """RUNDIR/bundle, its metrics measured through the bundle once written (with the
    torch weights as weights.npz when given)."""
    from imgclass.bundle import save_bundle

    preprocess = {"recipe": ds.recipe, "input": input_spec(ds, cfg, info)}
    described = model_description(cfg, info, ds, data_dir)
    described["calibration"] = metrics.get("calibration") or {"temperature": 1.0}
    parts = (onnx_bytes, ds.classes, preprocess)
    path = save_bundle(out / "bundle", *parts, metrics, described, weights)
    metrics.update(bundle_metrics(path, ds, cfg))
    return save_bundle(path, *parts, metrics, described, weights)


# --- the whole run -------------------------------------------------------------------


def train(
    data_dir: str | Path,
    out: str | Path,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    clock_start: float | None = None,
    reserve: float = 0.0,
) -> TrainOutcome:
    """Train ``cfg.model`` on the prepared dataset ``data_dir``; write ``out/bundle``.

    Under torchrun every process calls this; rank 0 alone writes files. callbacks: called
    as ``fn(epoch, row)`` after each epoch of a torch fit (tracking, pruning); an
    exception they raise stops the run. clock_start: ``time.monotonic()`` when the
    command began, from which ``cfg.time_limit`` counts (default: now); reserve: seconds
    the caller needs after this returns (recording the run), kept out of the budget.
    """
    started = time.perf_counter()
    clock = clock_start if clock_start is not None else time.monotonic()
    data_dir, out = Path(data_dir), Path(out)
    dist = ddp.init_distributed(cfg.device)
    if not dist.main:
        logging.getLogger("imgclass").setLevel(logging.WARNING)
    try:
        with PreparedDataset.open(data_dir) as ds:
            timing = (started, clock, reserve)
            return _train(ds, data_dir, out, cfg, resume, dist, timing, callbacks)
    finally:
        ddp.shutdown(dist)


def _train(
    ds: PreparedDataset,
    data_dir: Path,
    out: Path,
    cfg: TrainConfig,
    resume: bool,
    dist: ddp.Dist,
    timing: tuple[float, float, float],
    callbacks: Sequence[Callback] = (),
) -> TrainOutcome:
    started, clock, reserve = timing  # perf_counter, monotonic start, seconds kept after
    info = model_info(cfg.model)
    check_fit(cfg, info, ds, dist)
    cfg.model_args = model_arguments(cfg, info, ds)
    cfg.augment = settle_augment(cfg.augment, ds.recipe)
    if info.framework == "torch":
        log.info("augmentation: %s (%s)", cfg.augment.preset, cfg.augment.reason or "as given")
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        if not resume and (out / "checkpoints" / "last.pt").exists():
            log.warning("%s holds a checkpoint: starting over (--resume continues it)", out)
    onnx_bytes: bytes | None
    weights: dict[str, np.ndarray] | None = None
    if info.framework == "sklearn":
        if cfg.time_limit:
            log.info("%s trains in one fit: time_limit does not apply to it", cfg.model)
        onnx_bytes, metrics = fit_sklearn(cfg, ds)
    else:
        onnx_bytes, metrics, weights = fit_torch(
            cfg, info, ds, out, resume, dist, callbacks, clock, reserve
        )
    if onnx_bytes is None:  # not rank 0
        ddp.barrier(dist)
        return TrainOutcome(None, metrics, time.perf_counter() - started, cfg.model)
    onnx_bytes, metrics["calibration"] = calibrate(onnx_bytes, ds, cfg, info)
    metrics["total_seconds"] = time.perf_counter() - started
    bundle = write_bundle(out, onnx_bytes, cfg, info, ds, data_dir, metrics, weights)
    ddp.barrier(dist)
    return TrainOutcome(bundle, metrics, time.perf_counter() - started, cfg.model)
