"""Training configuration: typed defaults, a YAML file, then ``--set key=value``.

Resolution order: the trainer's defaults, the model family's defaults
(``model_info(name).default_cfg``), the ``--config`` file, the ``--set`` overrides.
Model arguments (e.g. ``width``, ``dropout``, ``n_components``) sit beside the
training keys; any other key is an error that lists the valid ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imgclass.errors import ConfigError


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data."""

    model: str = "cnn-resnet"
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "adamw"  # adam | adamw | sgd
    lr: float = 3e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"  # onecycle | cosine | plateau | none
    label_smoothing: float = 0.0
    augment: str = "none"  # none | affine
    patience: int = 0  # early stopping after this many epochs without improvement; 0 = off
    seed: int = 0
    num_threads: int = 0  # 0 = all cores
    max_train_samples: int = 0  # 0 = all
    frozen_epochs: int = 0  # transfer models: epochs with the backbone frozen first
    unfreeze_lr_factor: float = 0.1  # transfer models: lr multiplier once unfrozen
    max_len: int = 200  # sequence models: steps kept per drawing
    sequence_format: str = "stroke5"  # sequence models: stroke5 | stroke3
    model_args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHOICES = {
    "sequence_format": ("stroke5", "stroke3"),
    "optimizer": ("adam", "adamw", "sgd"),
    "schedule": ("onecycle", "cosine", "plateau", "none"),
    "augment": ("none", "affine", "photo"),
}


def parse_value(text: str) -> Any:
    """``--set`` values are YAML scalars: 3e-4, 10, true, cosine."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            return value
    return value


def resolve_config(
    model: str, file: str | None = None, sets: list[str] | None = None, **overrides: Any
) -> TrainConfig:
    """Merge defaults, the family's defaults, a YAML file and ``key=value`` overrides."""
    from imgclass.models.registry import model_args, model_info

    info = model_info(model)
    values: dict[str, Any] = dict(info.default_cfg)
    if file:
        try:
            loaded = yaml.safe_load(Path(file).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"--config {file}: cannot read it ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {file}: expected a mapping of settings")
        values.update(
            loaded.get("model_args", {}) if isinstance(loaded.get("model_args"), dict) else {}
        )
        values.update({k: v for k, v in loaded.items() if k not in ("model_args", "model")})
    for item in sets or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        values[key.strip().removeprefix("model.")] = parse_value(text)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return _build(model, values, set(model_args(model, {k: 1 for k in values})))


def _build(model: str, values: dict[str, Any], arg_keys: set[str]) -> TrainConfig:
    import inspect

    from imgclass.models.registry import model_info

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    fields.pop("model_args")
    ctor = set(inspect.signature(model_info(model).constructor).parameters) - {"num_classes"}
    unknown = set(values) - set(fields) - ctor
    if unknown:
        valid = sorted(set(fields) | ctor)
        raise ConfigError(
            f"unknown setting(s) {sorted(unknown)} for {model}; valid: {', '.join(valid)}"
        )
    kwargs: dict[str, Any] = {
        "model": model,
        "model_args": {k: values[k] for k in arg_keys if k in values},
    }
    for name, f in fields.items():
        if name in values and name != "model":
            kwargs[name] = _coerce(name, values[name], f.type)
    cfg = TrainConfig(**kwargs)
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(
                f"{key} must be one of {', '.join(allowed)}, got {getattr(cfg, key)!r}"
            )
    return cfg


def _coerce(name: str, value: Any, kind: Any) -> Any:
    try:
        if kind in ("int", int):
            return int(value)
        if kind in ("float", float):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a {kind}, got {value!r}") from None


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
