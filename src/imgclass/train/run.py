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
Split = tuple[Any, np.ndarray]  # (inputs, labels); inputs are images or (sequences, lengths)


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


def load_splits(ds: PreparedDataset, cfg: TrainConfig, input_kind: str) -> dict[str, Split]:
    """Every split in memory, as images or as padded stroke sequences."""
    if "train" not in ds.splits:
        raise DatasetError(
            f"{ds.path} has no training examples (its split is {ds.manifest['split_percentages']})"
        )
    out: dict[str, Split] = {}
    for split in ds.splits:
        if input_kind == "sequence":
            from imgclass.data.sequences import encode_drawings

            raw = ds.manifest.get("stroke_kind") == "raw"
            out[split] = (
                encode_drawings(ds.all_strokes(split), cfg.sequence_format, cfg.max_len, raw),
                ds.labels(split),
            )
        else:
            out[split] = ds.load(split)
    if cfg.max_train_samples and len(out["train"][1]) > cfg.max_train_samples:
        x, y = out["train"]
        k = cfg.max_train_samples
        out["train"] = ((x[0][:k], x[1][:k]) if isinstance(x, tuple) else x[:k], y[:k])
    return out


def fit_sklearn(
    cfg: TrainConfig, ds: PreparedDataset, data: dict[str, Split]
) -> tuple[bytes, dict[str, Any]]:
    from imgclass.export import export_sklearn
    from imgclass.models import create_model

    x, y = data["train"]
    model = create_model(cfg.model, len(ds.classes), **cfg.model_args)
    model.fit(x.reshape(len(x), -1).astype(np.float32) / 255.0, y.astype(np.int64))
    return export_sklearn(model, int(np.prod(ds.image_shape))), {"history": []}


def fit_torch(
    cfg: TrainConfig,
    ds: PreparedDataset,
    data: dict[str, Split],
    out: Path,
    resume: bool,
    input_kind: str,
) -> tuple[bytes, dict[str, Any]]:
    import torch

    from imgclass.export import export_torch, export_torch_sequence
    from imgclass.models import create_model
    from imgclass.train.trainer import Trainer, to_tensor

    args = dict(cfg.model_args)
    if input_kind == "sequence":
        args.setdefault("features", 5 if cfg.sequence_format == "stroke5" else 3)
    else:
        args.setdefault("in_channels", 1 if len(ds.image_shape) == 2 else 3)
        if cfg.model in ("cnn-small", "cnn-3conv"):
            args.setdefault("input_size", ds.image_shape[0])
    cfg.model_args = args
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, len(ds.classes), **args)
    x_val, y_val = data.get("valid", (None, None))
    result = Trainer(model, cfg, out / "checkpoints").fit(
        *data["train"], x_val, y_val, resume=resume
    )
    model.eval()
    x_train = data["train"][0]
    if input_kind == "sequence":
        onnx_bytes = export_torch_sequence(model, x_train[0][:2], x_train[1][:2])
    else:
        onnx_bytes = export_torch(model, to_tensor(x_train[:1]).numpy())
    info = {
        "history": result.history,
        "best_epoch": result.best_epoch,
        "train_seconds": result.seconds,
    }
    return onnx_bytes, info


def input_spec(
    ds: PreparedDataset, cfg: TrainConfig, input_kind: str, framework: str
) -> dict[str, Any]:
    """What turns a prepared example into the model's input (stored in preprocess.json)."""
    if input_kind == "sequence":
        return {
            "kind": "sequence",
            "format": cfg.sequence_format,
            "max_len": cfg.max_len,
            "size": list(ds.image_shape[:2]),
        }
    return {
        "kind": "image",
        "layout": "flat" if framework == "sklearn" else "nchw",
        "channels": 1 if len(ds.image_shape) == 2 else 3,
        "size": list(ds.image_shape[:2]),
        "scale": 1 / 255,
    }


def test_metrics(bundle: Any, ds: PreparedDataset, data: dict[str, Split]) -> dict[str, Any]:
    """Valid and test metrics measured through the exported bundle (ONNX Runtime)."""
    from imgclass.evaluate.metrics import compute_metrics

    metrics: dict[str, Any] = {}
    for split in ("valid", "test"):
        if split not in data:
            continue
        x, y = data[split]
        proba = bundle.predict_sequences(*x) if isinstance(x, tuple) else bundle.predict_proba(x)
        m = compute_metrics(y, proba, ds.classes)
        metrics[split] = {k: v for k, v in m.items() if k not in ("confusion", "per_class")}
    return metrics


def train(
    data_dir: str | Path, out: str | Path, cfg: TrainConfig, resume: bool = False
) -> TrainOutcome:
    """Train ``cfg.model`` on a prepared dataset and write ``out/bundle``."""
    from imgclass.bundle import load_bundle, save_bundle
    from imgclass.models import model_info

    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    family = model_info(cfg.model)
    with PreparedDataset.open(data_dir) as ds:
        if family.input_kind == "sequence" and not ds.has_strokes:
            raise ConfigError(f"{cfg.model} needs strokes; {ds.path} holds bitmaps only")
        save_config(cfg, out / "config.yaml")
        data = load_splits(ds, cfg, family.input_kind)
        if family.framework == "sklearn":
            onnx_bytes, info = fit_sklearn(cfg, ds, data)
        else:
            onnx_bytes, info = fit_torch(cfg, ds, data, out, resume, family.input_kind)
        save_config(cfg, out / "config.yaml")
        preprocess = {
            "recipe": ds.recipe,
            "input": input_spec(ds, cfg, family.input_kind, family.framework),
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
        metrics = {**info, **test_metrics(load_bundle(bundle_dir), ds, data)}
        metrics["total_seconds"] = time.perf_counter() - started
        save_bundle(bundle_dir, onnx_bytes, ds.classes, preprocess, metrics, model_json)
    return TrainOutcome(bundle_dir, metrics, metrics["total_seconds"])
