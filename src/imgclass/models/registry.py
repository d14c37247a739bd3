"""One registry of model families: ``create_model(name, num_classes, **cfg)``.

Each family file ends with small registered constructors (as in timm). The
registration carries what training, export and serving need to know: the input
kind, the framework and the default configuration (model arguments and training
defaults), so the factory is the only place a model is ever built.

A name registered with a trailing colon is a pattern: ``transfer-timm:`` stands for
``transfer-timm:<backbone>``, and its constructor receives ``backbone=<backbone>``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imgclass.errors import ConfigError

# Training defaults every family starts from; a family's own defaults override them.
# Every key must be a TrainConfig field or a constructor argument (the trainer checks).
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
    """What the rest of imgclass knows about a registered model.

    input_kind: "image" (float32 (N, C, H, W) in [0, 1]; flattened (N, H*W*C) for
        sklearn) or "sequence" (float32 (N, T, F) plus int64 lengths (N,)).
    framework: "torch" or "sklearn".
    default_cfg: model arguments and training defaults (epochs, lr, schedule, ...).
    search_space: ``fn(optuna_trial) -> dict`` of settings to try, or None.
    requires: importable modules the family needs beyond imgclass's own dependencies.
    test_cfg: a small, fast configuration (model arguments or training keys, like
        ``default_cfg``) that the shared contract test builds, trains and round-trips
        through a bundle, so that no test needs a per-family ``if`` (timm's tests read
        input sizes from a model's config the same way). The input channels, image
        size and sequence features come from the test's data, not from here.
    """

    name: str
    family: str
    input_kind: str
    framework: str
    constructor: Callable[..., Any]
    default_cfg: dict[str, Any] = field(default_factory=dict)
    search_space: Callable[[Any], dict[str, Any]] | None = None
    doc: str = ""
    requires: tuple[str, ...] = ()
    test_cfg: dict[str, Any] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        """Whether the optional libraries this family needs are installed."""
        return all(importlib.util.find_spec(m) is not None for m in self.requires)


_REGISTRY: dict[str, ModelInfo] = {}
_PATTERNS: dict[str, ModelInfo] = {}  # "transfer-timm:" -> info of the family


def register_model(
    name: str,
    *,
    family: str,
    input_kind: str = "image",
    framework: str = "torch",
    default_cfg: dict[str, Any] | None = None,
    search_space: Callable[[Any], dict[str, Any]] | None = None,
    requires: tuple[str, ...] = (),
    test_cfg: dict[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fn(num_classes, **cfg)`` under ``name``.

    A ``name`` ending with ":" registers a pattern whose constructor takes ``backbone``.
    test_cfg: the small configuration tests build it with (see ``ModelInfo``).
    """
    if input_kind not in ("image", "sequence"):
        raise ValueError(f"{name}: input_kind must be 'image' or 'sequence', not {input_kind!r}")
    if framework not in ("torch", "sklearn"):
        raise ValueError(f"{name}: framework must be 'torch' or 'sklearn', not {framework!r}")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        cfg = {**TRAIN_DEFAULTS, **(default_cfg or {})}
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        info = ModelInfo(
            name,
            family,
            input_kind,
            framework,
            fn,
            cfg,
            search_space,
            doc,
            tuple(requires),
            dict(test_cfg or {}),
        )
        (_PATTERNS if name.endswith(":") else _REGISTRY)[name] = info
        return fn

    return decorate


def _load_families() -> None:
    from imgclass.models import (  # noqa: F401  (registers on import)
        cnn,
        pca_svm,
        stroke_rnn,
        transfer,
    )


def list_models() -> list[str]:
    """Every concrete registered name (patterns such as ``transfer-timm:`` excluded)."""
    _load_families()
    return sorted(_REGISTRY)


def list_patterns(available_only: bool = True) -> list[str]:
    """Name patterns such as ``transfer-timm:<name>``, by default only where installed."""
    _load_families()
    return sorted(
        f"{p}<name>" for p, info in _PATTERNS.items() if info.available or not available_only
    )


def model_info(name: str) -> ModelInfo:
    """The registration of ``name``; ConfigError naming the valid choices otherwise."""
    _load_families()
    if name in _REGISTRY:
        return _REGISTRY[name]
    prefix, sep, backbone = name.partition(":")
    pattern = _PATTERNS.get(prefix + sep) if sep else None
    if pattern is None or not backbone:
        choices = ", ".join([*sorted(_REGISTRY), *list_patterns(available_only=False)])
        raise ConfigError(f"unknown model {name!r}; choose one of {choices}")
    ctor = functools.partial(pattern.constructor, backbone=backbone)
    return dataclasses.replace(pattern, name=name, constructor=ctor)


def constructor_keys(name: str) -> set[str]:
    """The model constructor's own arguments (``num_classes`` and ``backbone`` excluded)."""
    params = inspect.signature(model_info(name).constructor).parameters
    return set(params) - {"num_classes", "backbone"}


def model_args(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The constructor's own arguments out of a full config (training keys dropped)."""
    params = inspect.signature(model_info(name).constructor).parameters
    return {k: v for k, v in cfg.items() if k in params and k not in ("num_classes", "backbone")}


def create_model(name: str, num_classes: int, **cfg: Any) -> Any:
    """Build a model; ``cfg`` may hold training keys too (they are ignored here)."""
    info = model_info(name)
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    return info.constructor(num_classes, **model_args(name, cfg))
