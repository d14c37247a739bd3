"""Fine-tuning a champion on accepted feedback: champion bundle + feedback -> challenger.

The challenger starts from the champion's own weights (``weights.npz``) and trains,
with the champion's training settings (augmentation and all) at a lower learning rate,
on the feedback's training split mixed with a *replay* sample of the champion's
original training data, so that it learns the corrections without forgetting what it
knew. Labels the champion did not know extend its last linear layer: the old rows are
copied, so old classes keep their scores, and only the new rows start from scratch.
``freeze_features`` trains the head alone (convolutions and their batch norm fixed).

A champion without weights cannot be fine-tuned: a scikit-learn model (pca-svm) is
refitted from scratch on replay + feedback; a torch bundle made before bundles kept
their weights is a ``ModelError`` asking to retrain it with this version.

Everything is written under ``out``; nothing else is touched, so a fine-tune killed
half-way leaves only a folder to delete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclass.errors import ConfigError, DatasetError, ModelError

if TYPE_CHECKING:
    from torch import nn

    from imgclass.bundle import ModelDescription
    from imgclass.data.store import PreparedDataset
    from imgclass.train.config import TrainConfig
    from imgclass.train.trainer import Callback

log = logging.getLogger(__name__)


@dataclass
class FineTuneConfig:
    """How a challenger is trained.

    replay_ratio: replayed original training examples per feedback training example
    (0 = none); min_replay: at least this many when replaying at all. lr: the learning
    rate (None = the champion's times lr_factor). freeze_features: train the head only.
    batch_size / num_threads: None or 0 keep the champion's settings.
    """

    replay_ratio: float = 1.0
    min_replay: int = 200
    freeze_features: bool = False
    epochs: int = 5
    lr: float | None = None
    lr_factor: float = 0.1
    batch_size: int | None = None
    seed: int = 0
    num_threads: int = 0

    def check(self) -> None:
        """ConfigError for values out of range."""
        if self.replay_ratio < 0 or self.min_replay < 0:
            raise ConfigError("replay ratio and minimum must not be negative")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if (self.lr is not None and self.lr <= 0) or self.lr_factor <= 0:
            raise ConfigError("the learning rate (and its factor) must be positive")


@dataclass
class FineTuneResult:
    """What a fine-tune produced. method: "fine-tune" (from the champion's weights) or
    "refit" (a scikit-learn model fitted again from scratch)."""

    bundle: Path
    labels: list[str]
    new_labels: list[str]
    method: str
    n_feedback: int
    n_replay: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    frozen_parameters: int = 0


# --- pure pieces ---------------------------------------------------------------------


def replay_count(n_feedback: int, n_original: int, ratio: float, minimum: int) -> int:
    """How many original examples to replay: ``ratio`` per feedback example, at least
    ``minimum`` (when ``ratio`` > 0), at most all of them."""
    if ratio <= 0 or n_original == 0:
        return 0
    return min(n_original, max(minimum, int(round(ratio * n_feedback))))


def replay_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` (about: rounded per class) examples drawn from each class
    in proportion to its share of ``labels``, chosen by ``seed``."""
    from imgclass.train.batches import stratified_holdout

    if n <= 0:
        return np.zeros(0, np.int64)
    if n >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    return stratified_holdout(labels, n / len(labels), seed)[1].astype(np.int64)


def classifier_name(model: nn.Module) -> str:
    """The dotted name of the model's output layer: the last ``nn.Linear``, preferring
    one inside its ``head``."""
    from torch import nn

    found = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ModelError(f"{type(model).__name__} has no linear output layer to extend")
    in_head: list[str] = [n for n in found if n.startswith("head.")]
    return (in_head or found)[-1]


def extend_head(model: nn.Module, num_classes: int) -> int:
    """Grow the output layer to ``num_classes`` outputs, keeping the existing rows (so the
    old classes score as before); returns how many outputs were added."""
    import torch
    from torch import nn

    name = classifier_name(model)
    old = model.get_submodule(name)
    if not isinstance(old, nn.Linear):  # classifier_name names Linear layers only
        raise ModelError(f"{name} is not a linear layer")
    added = num_classes - old.out_features
    if added < 0:
        raise ModelError(f"cannot shrink a head of {old.out_features} outputs to {num_classes}")
    if added == 0:
        return 0
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    with torch.no_grad():
        new.weight[: old.out_features] = old.weight
        new.weight[old.out_features :] *= 0.1  # small: new classes start unsure
        if old.bias is not None and new.bias is not None:
            new.bias[: old.out_features] = old.bias
            new.bias[old.out_features :] = old.bias.min()
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
    return added


def freeze_features(model: nn.Module) -> int:
    """Freeze everything but the head (its ``head`` module, else the output layer): the
    parameters stop learning and frozen batch norms use their running statistics.
    Returns the number of parameters frozen."""
    from torch import nn

    keep = "head" if isinstance(getattr(model, "head", None), nn.Module) else classifier_name(model)
    frozen = 0
    for name, module in model.named_modules():
        if name == keep or name.startswith(keep + ".") or not name:
            continue
        for p in module.parameters(recurse=False):
            p.requires_grad_(False)
            frozen += p.numel()
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(_keep_eval)
    return frozen


def _keep_eval(module: nn.Module, _inputs: Any) -> None:
    """A frozen batch norm normalises with its running statistics, even in training."""
    module.training = False


def training_config(desc: ModelDescription, options: FineTuneConfig) -> TrainConfig:
    """The champion's own training settings, adjusted for fine-tuning: ``epochs``, a
    lower learning rate, no early stopping or validation holdout."""
    from imgclass.train.config import build_config, resolve_config

    saved = desc.config
    if saved:
        train = {k: v for k, v in saved.items() if k not in ("model", "augment", "model_args")}
        cfg = build_config(desc.name, train, dict(saved.get("augment") or {}), dict(desc.args))
    else:  # an older bundle: the family's defaults
        cfg = resolve_config(desc.name)
        cfg.model_args = dict(desc.args)
    cfg.epochs = options.epochs
    cfg.lr = options.lr if options.lr is not None else cfg.lr * options.lr_factor
    cfg.batch_size = options.batch_size or cfg.batch_size
    cfg.num_threads = options.num_threads or cfg.num_threads
    cfg.seed = options.seed
    cfg.val_fraction, cfg.patience, cfg.max_train_samples = 0.0, 0, 0
    cfg.restore_best = False  # no validation: keep the last epoch
    cfg.frozen_epochs = options.epochs if options.freeze_features else 0
    return cfg


def label_codes(ds: PreparedDataset, split: str, labels: Sequence[str]) -> np.ndarray:
    """A split's labels as indices into ``labels`` (matched by name; -1 where absent)."""
    index = {name: i for i, name in enumerate(labels)}
    mapping = np.array([index.get(c, -1) for c in ds.classes], dtype=np.int64)
    return mapping[ds.labels(split)] if ds.size(split) else np.zeros(0, np.int64)


# --- the data ------------------------------------------------------------------------


@dataclass
class TrainingSet:
    """Feedback-train plus the replay sample, as model inputs (images, or sequences and
    lengths) and label indices into ``labels``."""

    inputs: tuple[np.ndarray, ...]
    targets: np.ndarray
    labels: list[str]
    n_feedback: int
    n_replay: int
    valid: tuple[tuple[np.ndarray, ...], np.ndarray] | None = None  # to fit a temperature on


def gather(
    desc: ModelDescription,
    feedback: PreparedDataset,
    original: PreparedDataset,
    options: FineTuneConfig,
    cfg: TrainConfig | None,
) -> TrainingSet:
    """The training examples, with labels = the feedback's classes (the champion's,
    then the new ones)."""
    labels = list(feedback.classes)
    if labels[: len(desc.labels)] != desc.labels:
        raise DatasetError(
            f"{feedback.path} was not exported for this champion: its classes do not start "
            "with the champion's labels (export it with --bundle <champion>)"
        )
    check_shapes(desc, feedback, original)
    if "train" not in feedback.splits:
        raise DatasetError(
            f"{feedback.path}: every accepted submission fell in the held-out test slice; "
            "accept more feedback (or lower --test-fraction)"
        )
    codes = label_codes(original, "train", labels)
    n_fb = feedback.size("train")
    n = replay_count(n_fb, len(codes), options.replay_ratio, options.min_replay)
    picked = replay_indices(codes, n, options.seed)
    picked = picked[codes[picked] >= 0]
    targets = np.concatenate([feedback.labels("train"), codes[picked]])
    inputs: tuple[np.ndarray, ...]
    if desc.input_kind == "sequence":
        inputs = sequence_inputs(feedback, original, picked, cfg)
    else:
        images = original.images("train")[picked] if len(picked) else None
        fb = feedback.load("train")[0]
        inputs = (fb if images is None else np.concatenate([fb, images]),)
    log.info("fine-tuning on %d feedback and %d replayed examples", n_fb, len(picked))
    valid = validation_examples(desc, original, labels, cfg, options.seed)
    return TrainingSet(inputs, targets.astype(np.int64), labels, n_fb, len(picked), valid)


def validation_examples(
    desc: ModelDescription,
    original: PreparedDataset,
    labels: list[str],
    cfg: TrainConfig | None,
    seed: int,
) -> tuple[tuple[np.ndarray, ...], np.ndarray] | None:
    """The original dataset's valid split (the examples of classes the challenger knows),
    as inputs (uint8 images, or sequences and lengths) and indices into ``labels``, to fit
    the challenger's temperature on; None when it has none."""
    from imgclass.train.calibrate import subsample

    if "valid" not in original.splits:
        return None
    codes = label_codes(original, "valid", labels)
    known = np.flatnonzero(codes >= 0)
    if not len(known):
        return None
    pick = known[subsample(len(known), seed, int(np.prod(original.image_shape)))]
    if desc.input_kind == "sequence" and cfg is not None:
        from imgclass.data.sequences import encode_drawings

        drawings = [original.strokes("valid", int(i)) for i in pick]
        raw = original.manifest.get("stroke_kind") == "raw"
        return encode_drawings(drawings, cfg.sequence_format, cfg.max_len, raw=raw), codes[pick]
    return (np.asarray(original.images("valid")[pick]),), codes[pick]


def check_shapes(desc: ModelDescription, *datasets: PreparedDataset) -> None:
    """DatasetError unless the datasets hold images in the champion's shape."""
    size = desc.preprocess["input"].get("size")
    for ds in datasets:
        if size is not None and [int(v) for v in ds.image_shape[:2]] != [int(v) for v in size]:
            raise DatasetError(
                f"{ds.path} holds {tuple(ds.image_shape)} images; the champion takes {size}"
            )


def sequence_inputs(
    feedback: PreparedDataset, original: PreparedDataset, picked: np.ndarray, cfg: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Padded stroke sequences (n, max_len, F) and lengths for a sequence champion."""
    from imgclass.data.sequences import encode_drawings

    if not (feedback.has_strokes and original.has_strokes):
        raise DatasetError("a stroke model needs strokes in both the feedback and the original")
    parts = []
    for ds, drawings in (
        (feedback, feedback.all_strokes("train")),
        (original, [original.strokes("train", int(i)) for i in picked]),
    ):
        if drawings:
            raw = ds.manifest.get("stroke_kind") == "raw"
            parts.append(encode_drawings(drawings, cfg.sequence_format, cfg.max_len, raw=raw))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# --- training ------------------------------------------------------------------------


def fine_tune(
    champion: str | Path,
    feedback_dir: str | Path,
    original_dir: str | Path,
    out: str | Path,
    options: FineTuneConfig | None = None,
    *,
    callbacks: Sequence[Callback] = (),
) -> FineTuneResult:
    """Train a challenger from ``champion`` (a bundle folder) on the feedback dataset
    ``feedback_dir`` (exported with the champion's recipe) plus a replay sample of
    ``original_dir``'s training split; write it as a complete bundle ``out/bundle``.

    callbacks: ``fn(epoch, row)`` after each epoch (tracking; an exception stops it).
    """
    from imgclass.bundle import describe_bundle
    from imgclass.data.store import PreparedDataset

    options = options or FineTuneConfig()
    options.check()
    started = time.perf_counter()
    desc = describe_bundle(champion)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with PreparedDataset.open(feedback_dir) as fb, PreparedDataset.open(original_dir) as orig:
        if desc.framework == "sklearn":
            return refit_sklearn(desc, fb, orig, out, options, started)
        if desc.framework != "torch":
            raise ModelError(f"{desc.path}: cannot retrain a {desc.framework!r} model")
        cfg = training_config(desc, options)
        data = gather(desc, fb, orig, options, cfg)
        return _train_torch(desc, data, cfg, out, options, callbacks, started)


def _train_torch(
    desc: ModelDescription,
    data: TrainingSet,
    cfg: TrainConfig,
    out: Path,
    options: FineTuneConfig,
    callbacks: Sequence[Callback],
    started: float,
) -> FineTuneResult:
    import torch

    from imgclass.bundle import load_torch_model
    from imgclass.train.batches import ArrayBatches
    from imgclass.train.trainer import Trainer

    torch.manual_seed(options.seed)
    model, _ = load_torch_model(desc.path)
    added = extend_head(model, len(data.labels))
    frozen = freeze_features(model) if options.freeze_features else 0
    if added:
        log.info("new labels: %s", ", ".join(data.labels[-added:]))
    trainer = Trainer(model, cfg, checkpoint_dir=None, callbacks=callbacks)
    fit = trainer.fit(ArrayBatches(data.inputs, data.targets))
    model.cpu().eval()
    bundle = write_challenger(out, model, desc, data, cfg, fit.history, started)
    return FineTuneResult(
        bundle,
        data.labels,
        data.labels[len(desc.labels) :],
        "fine-tune",
        data.n_feedback,
        data.n_replay,
        time.perf_counter() - started,
        fit.history,
        frozen,
    )


def refit_sklearn(
    desc: ModelDescription,
    fb: PreparedDataset,
    orig: PreparedDataset,
    out: Path,
    options: FineTuneConfig,
    started: float,
) -> FineTuneResult:
    """A scikit-learn champion has no weights to start from: fit it again, with its own
    arguments, on replay + feedback."""
    from imgclass.models import create_model
    from imgclass.onnx_export import export_onnx

    data = gather(desc, fb, orig, options, None)
    images = data.inputs[0]
    x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255)
    model = create_model(desc.name, len(data.labels), **desc.args)
    model.fit(x, data.targets)
    onnx_bytes = export_onnx(model, x[:2])
    seconds = time.perf_counter() - started
    bundle = save_challenger(out, onnx_bytes, None, desc, data, None, [], seconds)
    return FineTuneResult(
        bundle,
        data.labels,
        data.labels[len(desc.labels) :],
        "refit",
        data.n_feedback,
        data.n_replay,
        time.perf_counter() - started,
    )


# --- the challenger bundle -----------------------------------------------------------


def write_challenger(
    out: Path,
    model: nn.Module,
    desc: ModelDescription,
    data: TrainingSet,
    cfg: TrainConfig,
    history: list[dict[str, float]],
    started: float,
) -> Path:
    """Export the fine-tuned model to ONNX and save it with its weights."""
    from imgclass.onnx_export import export_onnx
    from imgclass.train.run import images_to_input, state_arrays

    sample = tuple(a[:2] for a in data.inputs)
    if desc.input_kind == "sequence":
        onnx_bytes = export_onnx(model, sample[0].astype(np.float32), sample[1])
    else:
        onnx_bytes = export_onnx(model, images_to_input(sample[0]))
    seconds = time.perf_counter() - started
    weights = state_arrays(model)
    return save_challenger(out, onnx_bytes, weights, desc, data, cfg, history, seconds)


def save_challenger(
    out: Path,
    onnx_bytes: bytes,
    weights: dict[str, np.ndarray] | None,
    desc: ModelDescription,
    data: TrainingSet,
    cfg: TrainConfig | None,
    history: list[dict[str, float]],
    seconds: float,
) -> Path:
    """out/bundle: the champion's recipe and input spec, the grown label list, and a
    model.json that still names the champion's original dataset (the frozen test split
    and the replay source of the next retrain) and records where the challenger came from."""
    from imgclass.bundle import description_to_save, save_bundle

    onnx_bytes, calibration = calibrate_challenger(onnx_bytes, desc, data)
    # a new float model: an int8 champion's "quantization" does not describe it
    described = description_to_save(desc.model_json, "quantization")
    described["calibration"] = calibration
    described["num_classes"] = len(data.labels)
    if cfg is not None:
        described["config"] = cfg.to_dict()
    described["retrained_from"] = {
        "bundle": str(desc.path.resolve()),
        "model_sha256": desc.model_json.get("model_sha256"),
        "feedback_examples": data.n_feedback,
        "replayed_examples": data.n_replay,
        "new_labels": data.labels[len(desc.labels) :],
    }
    metrics = {"history": history, "train_seconds": seconds, "calibration": calibration}
    return save_bundle(
        out / "bundle", onnx_bytes, data.labels, desc.preprocess, metrics, described, weights
    )


def calibrate_challenger(
    onnx_bytes: bytes, desc: ModelDescription, data: TrainingSet
) -> tuple[bytes, dict[str, Any]]:
    """The challenger's graph with a temperature fitted on the original valid split, as
    ``imgclass train`` does (unchanged, T = 1, without one), and model.json's record."""
    from imgclass.train.calibrate import calibrate_graph, flat_input, uncalibrated
    from imgclass.train.run import images_to_input

    if data.valid is None:
        return onnx_bytes, uncalibrated("the original dataset has no valid split")
    inputs, labels = data.valid
    to_input = None
    if desc.input_kind != "sequence":
        to_input = flat_input if desc.framework == "sklearn" else images_to_input
    return calibrate_graph(onnx_bytes, inputs, labels, "valid (original dataset)", to_input)
