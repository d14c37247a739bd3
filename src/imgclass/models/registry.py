"""One registry of model families: ``create_model(name, num_classes, **cfg)``.

Each family file ends with small registered constructors (as in timm). The
registration carries what training, export and serving need to know: the input
kind, the framework and the default configuration (model arguments and training
defaults), so the factory is the only place a model is ever built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imgclass.errors import ConfigError

# Training defaults every family starts from; a family's own defaults override them.
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 20,
    "batch_size": 64,
    "optimizer": "adamw",
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "schedule": "onecycle",
    "label_smoothing": 0.0,
    "augment": "none",
    "patience": 0,
}


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of imgclass knows about a registered model."""

    name: str
    family: str
    input_kind: str  # "image" or "sequence"
    framework: str  # "torch" or "sklearn"
    constructor: Callable[..., Any]
    default_cfg: dict[str, Any] = field(default_factory=dict)
    search_space: Callable[[Any], dict[str, Any]] | None = None
    doc: str = ""


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    family: str,
    input_kind: str = "image",
    framework: str = "torch",
    default_cfg: dict[str, Any] | None = None,
    search_space: Callable[[Any], dict[str, Any]] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fn(num_classes, **cfg)`` under ``name``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        cfg = {**TRAIN_DEFAULTS, **(default_cfg or {})}
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _REGISTRY[name] = ModelInfo(name, family, input_kind, framework, fn, cfg, search_space, doc)
        return fn

    return decorate


def _load_families() -> None:
    from imgclass.models import cnn, pca_svm, stroke_rnn, transfer  # noqa: F401  (registers on import)


def list_models() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    _load_families()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def model_args(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The constructor's own arguments out of a full config (training keys dropped)."""
    import inspect

    params = inspect.signature(model_info(name).constructor).parameters
    return {k: v for k, v in cfg.items() if k in params and k != "num_classes"}


def create_model(name: str, num_classes: int, **cfg: Any) -> Any:
    """Build a model; ``cfg`` may hold training keys too (they are ignored here)."""
    info = model_info(name)
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    return info.constructor(num_classes, **model_args(name, cfg))
