"""The pipeline behind ``imgclass train``: data -> model -> fit -> ONNX -> bundle."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgclass.data.store import PreparedDataset, manifest_hash
from imgclass.errors import ConfigError, DatasetError
from imgclass.train.config import TrainConfig, save_config

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    bundle: Path
    metrics: dict[str, Any]
    seconds: float


def default_model(ds: PreparedDataset) -> str:
    """cnn-resnet for gray bitmaps; photos need the transfer family (not built yet)."""
    if len(ds.image_shape) == 3:
        raise ConfigError(
            "photo datasets need a transfer model, which is not available yet; pass --model"
        )
    return "cnn-resnet"


def load_splits(ds: PreparedDataset, cfg: TrainConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if "train" not in ds.splits:
        raise DatasetError(
            f"{ds.path} has no training examples (its split is {ds.manifest['split_percentages']})"
        )
    out = {s: ds.load(s) for s in ds.splits}
    if cfg.max_train_samples and len(out["train"][1]) > cfg.max_train_samples:
        x, y = out["train"]
        out["train"] = (x[: cfg.max_train_samples], y[: cfg.max_train_samples])
    return out


def fit_model(
    cfg: TrainConfig,
    ds: PreparedDataset,
    data: dict[str, tuple[np.ndarray, np.ndarray]],
    out: Path,
    resume: bool,
) -> tuple[bytes, dict[str, Any], str]:
    """Train; returns (onnx bytes, training info, input layout)."""
    from imgclass.models import create_model, model_info

    info = model_info(cfg.model)
    channels = 1 if len(ds.image_shape) == 2 else 3
    args = dict(cfg.model_args)
    if info.framework == "sklearn":
        from imgclass.export import export_sklearn

        x, y = data["train"]
        model = create_model(cfg.model, len(ds.classes), **args)
        model.fit(x.reshape(len(x), -1).astype(np.float32) / 255.0, y.astype(np.int64))
        return export_sklearn(model, int(np.prod(ds.image_shape))), {"history": []}, "flat"
    import torch

    from imgclass.export import export_torch
    from imgclass.train.trainer import Trainer, to_tensor

    if "in_channels" not in args:
        args["in_channels"] = channels
    if cfg.model in ("cnn-small", "cnn-3conv") and "input_size" not in args:
        args["input_size"] = ds.image_shape[0]
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, len(ds.classes), **args)
    cfg.model_args = args
    x_val, y_val = data.get("valid", (None, None))
    result = Trainer(model, cfg, out / "checkpoints").fit(
        *data["train"], x_val, y_val, resume=resume
    )
    model.eval()
    sample = to_tensor(data["train"][0][:1]).numpy()
    return (
        export_torch(model, sample),
        {
            "history": result.history,
            "best_epoch": result.best_epoch,
            "train_seconds": result.seconds,
        },
        "nchw",
    )


def train(
    data_dir: str | Path, out: str | Path, cfg: TrainConfig, resume: bool = False
) -> TrainOutcome:
    """Train ``cfg.model`` on a prepared dataset and write ``out/bundle``."""
    from imgclass.bundle import load_bundle, save_bundle
    from imgclass.evaluate.metrics import compute_metrics

    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with PreparedDataset.open(data_dir) as ds:
        save_config(cfg, out / "config.yaml")
        data = load_splits(ds, cfg)
        onnx_bytes, info, layout = fit_model(cfg, ds, data, out, resume)
        save_config(cfg, out / "config.yaml")
        from imgclass.models import model_info

        family = model_info(cfg.model)
        preprocess = {
            "recipe": ds.recipe,
            "input": {
                "kind": "image",
                "layout": layout,
                "channels": 1 if len(ds.image_shape) == 2 else 3,
                "size": list(ds.image_shape[:2]),
                "scale": 1 / 255,
            },
        }
        model_json = {
            "name": cfg.model,
            "family": family.family,
            "framework": family.framework,
            "input_kind": family.input_kind,
            "args": cfg.model_args,
            "config": cfg.to_dict(),
            "num_classes": len(ds.classes),
            "dataset": {
                "path": str(Path(data_dir).resolve()),
                "manifest_sha256": manifest_hash(data_dir),
                "classes": ds.classes,
            },
        }
        bundle_dir = save_bundle(out / "bundle", onnx_bytes, ds.classes, preprocess, {}, model_json)
        bundle = load_bundle(bundle_dir)
        metrics: dict[str, Any] = {**info}
        for split in ("valid", "test"):
            if split in data:
                x, y = data[split]
                m = compute_metrics(y, bundle.predict_proba(x), ds.classes)
                metrics[split] = {k: v for k, v in m.items() if k not in ("confusion", "per_class")}
        metrics["total_seconds"] = time.perf_counter() - started
        save_bundle(bundle_dir, onnx_bytes, ds.classes, preprocess, metrics, model_json)
    return TrainOutcome(bundle_dir, metrics, metrics["total_seconds"])
