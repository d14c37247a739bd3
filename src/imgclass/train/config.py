"""Training configuration: typed dataclasses, a YAML file, then ``--set key=value``.

Resolution order, each layer overriding the one before:

1. the dataclass defaults below;
2. the model family's ``model_info(name).default_cfg`` (training keys and model arguments);
3. the ``--config`` YAML file;
4. the ``--set key=value`` overrides, in order (values are YAML: ``3e-4``, ``10``, ``true``);
5. explicit command-line flags (``--epochs``, ``--seed``, ``--time-limit``).

Keys are the fields of ``TrainConfig``; ``augment.<field>`` for one augmentation
setting (``augment: affine`` picks a preset, see ``AUGMENT_PRESETS``; ``auto``, the
default of the bitmap and transfer families, lets the dataset's recipe choose, see
``data_preset``); ``model.<arg>``
or a bare constructor argument (``width``, ``n_components``) for the model. In YAML the
model may be ``model: cnn-resnet`` with ``model_args: {width: 48}``, or
``model: {name: cnn-resnet, width: 48}``. Any other key is a ``ConfigError`` that
names it and lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imgclass.errors import ConfigError
from imgclass.models.registry import constructor_keys

# --- augmentation --------------------------------------------------------------------


@dataclass
class Augment:
    """Augmentation strengths; every default is the identity (nothing happens).

    Image settings (sketches, digits and photos, float (N, C, H, W) batches):
    rotation and shear in degrees (+/-), scale as a fraction (0.15: 0.85-1.15), shift
    in pixels (+/-); elastic_alpha is the typical elastic displacement in pixels of a
    field smoothed over elastic_sigma pixels; erasing is the probability of blanking a
    random rectangle of up to erasing_area of the image; hflip the probability of a
    horizontal flip (off by default: not label-safe for clocks, cups or text).
    pad_crop: zero-pad each side by this fraction of the image side and crop back at a
    random place (whole-pixel shifts, the CIFAR recipe; 0.125 is 4 px at 32 px).
    Photo settings: crop_scale, the smallest area fraction of a random resized crop
    (1 = off); brightness, contrast and saturation jitter as fractions (+/-).
    Sequence settings: point_jitter, the standard deviation of noise added to each
    point's offset (in sequence units, 1 = 255 px); stroke_dropout, the probability of
    dropping each stroke (a drawing keeps at least one).
    reason: why this preset was chosen (a record for the log, the bundle and MLflow,
    e.g. "recipe photo" or "--set augment"), not a setting.
    """

    preset: str = "none"
    rotation: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    shift: float = 0.0
    elastic_alpha: float = 0.0
    elastic_sigma: float = 4.0
    erasing: float = 0.0
    erasing_area: float = 0.2
    hflip: float = 0.0
    pad_crop: float = 0.0
    crop_scale: float = 1.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    point_jitter: float = 0.0
    stroke_dropout: float = 0.0
    reason: str = ""

    @property
    def image_active(self) -> bool:
        """Whether any image augmentation is switched on."""
        return any(
            getattr(self, k) != v
            for k, v in dataclasses.asdict(Augment()).items()
            if k not in ("preset", "reason", "elastic_sigma", "erasing_area", *SEQUENCE_KEYS)
        )

    @property
    def sequence_active(self) -> bool:
        """Whether any sequence augmentation is switched on."""
        return self.point_jitter > 0 or self.stroke_dropout > 0


SEQUENCE_KEYS = ("point_jitter", "stroke_dropout")

# Named starting points; DESIGN.md: affine helped sketches more than elastic + erasing.
# "auto" holds nothing itself: the dataset's recipe picks one of the others (data_preset).
AUGMENT_PRESETS: dict[str, dict[str, float]] = {
    "auto": {},
    "none": {},
    "affine": {"rotation": 15.0, "scale": 0.15, "shear": 8.0, "shift": 3.0},
    "elastic": {
        "rotation": 15.0,
        "scale": 0.15,
        "shear": 8.0,
        "shift": 3.0,
        "elastic_alpha": 1.0,
        "erasing": 0.25,
    },
    # Images of things (a mirrored cat is a cat): flips and padded random crops.
    "flip-crop": {"hflip": 0.5, "pad_crop": 0.125},
    "flip-crop-color": {
        "hflip": 0.5,
        "pad_crop": 0.125,
        "brightness": 0.1,
        "contrast": 0.1,
        "saturation": 0.1,
    },
    "photo": {"crop_scale": 0.6, "hflip": 0.5, "brightness": 0.2, "contrast": 0.2},
    "sequence": {"point_jitter": 0.01, "stroke_dropout": 0.1},
}
PROBABILITIES = ("erasing", "hflip", "stroke_dropout")

# Recipes that make drawings or digits, whose label a mirror changes (a 2, a clock), and
# the steps that betray one in a recipe of another name (cropped to the ink, re-centred).
DRAWING_RECIPES = ("sketch", "mnist", "centroid")
DRAWING_STEPS = {"crop_to_ink", "fit_box", "center_of_mass", "centroid", "line_width"}
# What "auto" gives colour photos. With transfer models training their head on cached
# embeddings, it shapes only extra cached views (cache_views > 1: the mirror first) and
# any fine-tuning epochs; bench/bench_photos.py measures those variants.
PHOTO_PRESET = "flip-crop-color"


def data_preset(recipe: Mapping[str, Any] | None) -> tuple[str, str]:
    """The augmentation that suits the images a recipe makes, and why (for the log).

    Drawings and digits (recipes sketch, mnist, centroid, or any that crops to the ink
    and re-centres): "affine" (rotation, scale, shear, shift; never a mirror). Images of
    things (recipes none, photo, ...): flips and padded random crops, "flip-crop" for
    grayscale, PHOTO_PRESET (adding light colour jitter) for colour.
    """
    if not recipe:
        return "none", "the dataset names no recipe"
    name = str(recipe.get("name", "unnamed"))
    steps = recipe.get("steps")
    ops = {s.get("op") for s in steps if isinstance(s, dict)} if isinstance(steps, list) else set()
    if name in DRAWING_RECIPES or ops & DRAWING_STEPS:
        return "affine", f"recipe {name}"
    colour = recipe.get("channels") == 3
    return (PHOTO_PRESET if colour else "flip-crop"), f"recipe {name}"


def settle_augment(aug: Augment, recipe: Mapping[str, Any] | None) -> Augment:
    """``aug`` with an "auto" preset replaced by the recipe's choice (``data_preset``).

    For configurations resolved without the data at hand (``resolve_config`` without
    ``recipe``): the settings that differ from the identity are taken as the explicit
    ones and kept over the preset's. Any other preset is returned as it is.
    """
    if aug.preset != "auto":
        return aug
    preset, reason = data_preset(recipe)
    identity = dataclasses.asdict(Augment())
    explicit = {
        k: v
        for k, v in dataclasses.asdict(aug).items()
        if k not in ("preset", "reason") and v != identity[k]
    }
    return build_augment({"preset": preset, **explicit, "reason": reason})


# --- the configuration ---------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data.

    batch_size is per process (under torchrun the effective batch is batch_size x
    processes). warmup is in epochs: a linear ramp before cosine or constant ("none")
    schedules, the rising part of one-cycle (0 = one-cycle's default 30%).
    patience: stop after this many epochs without an improvement of ``monitor`` by more
    than min_delta (0 = never); restore_best reloads the best epoch's weights at the end.
    num_threads 0 = one per core (shared among torchrun's processes on CPU); workers =
    batches a background thread loads ahead (0 = load in the training thread, -1 = auto). val_fraction: share of the training split held out for
    validation when the dataset has no valid split (stratified, seeded).
    in_memory_mb: training sets up to this size are loaded whole, larger ones streamed.
    frozen_epochs / unfreeze_lr_factor: transfer models first train the head with the
    backbone frozen, then everything at lr x unfreeze_lr_factor; imagenet_head starts
    the head from the pretrained ImageNet rows of classes ImageNet knows.
    embedding_cache: train that frozen phase on the backbone's features computed once
    per image and cached in RUNDIR/cache (``imgclass.train.cached``); cache_views: the
    views cached per training image (1: the image; 2: and its mirror when the
    augmentation flips, else a random augmentation; more: further random augmentations).
    max_len / sequence_format: how drawings become sequences for sequence models.
    time_limit: seconds the whole run may take (0 = no limit; ``10m``, ``90s``, ``1h`` in
    YAML or ``--set``): the schedule is fitted into it, epochs being the cap
    (``imgclass.train.budget``). precision: fp32, bf16 or fp16 autocast (auto: bf16 on
    a CUDA device that supports it, else fp16 there, fp32 on CPU). channels_last: the
    channels-last memory format for convolutional models (auto: on CUDA only).
    """

    model: str = "cnn-fast"
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "onecycle"
    warmup: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: float = 0.0
    patience: int = 0
    min_delta: float = 0.0
    monitor: str = "val_loss"
    restore_best: bool = True
    augment: Augment = field(default_factory=Augment)
    seed: int = 0
    num_threads: int = 0
    workers: int = -1
    val_fraction: float = 0.0
    max_train_samples: int = 0
    in_memory_mb: int = 1024
    device: str = "auto"
    frozen_epochs: int = 0
    unfreeze_lr_factor: float = 0.1
    imagenet_head: bool = True
    embedding_cache: bool = True
    cache_views: int = 1
    max_len: int = 200
    sequence_format: str = "stroke5"
    time_limit: float = 0.0
    precision: str = "auto"
    channels_last: str = "auto"
    model_args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what config.yaml holds); ``resolve_config`` reads it back as is."""
        return dataclasses.asdict(self)


CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("adam", "adamw", "sgd"),
    "schedule": ("cosine", "onecycle", "plateau", "none"),
    "monitor": ("val_loss", "val_accuracy", "train_loss", "train_accuracy"),
    "device": ("auto", "cpu", "cuda"),
    "sequence_format": ("stroke5", "stroke3"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "channels_last": ("auto", "on", "off"),
}
TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "model_args")
AUGMENT_KEYS = tuple(f.name for f in dataclasses.fields(Augment))
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def parse_value(text: str) -> Any:
    """A ``--set`` value as YAML (``10``, ``true``, ``cosine``, ``[1, 2]``); numbers YAML 1.1
    leaves as strings (``3e-4``) become floats."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    except (RecursionError, ValueError) as exc:
        raise ConfigError(f"--set value {_start(text)}: {_too_much(exc)}") from None
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value)
    return value


# --- resolution ----------------------------------------------------------------------


class _Layers:
    """The settings gathered so far: training keys, augmentation keys, model arguments."""

    def __init__(self, model: str, ctor_keys: set[str]) -> None:
        self.model = model
        self.ctor_keys = ctor_keys
        self.train: dict[str, Any] = {}
        self.augment: dict[str, Any] = {}
        self.augment_where = ""  # which layer chose the augmentation preset
        self.model_args: dict[str, Any] = {}

    def set(self, key: str, value: Any, where: str) -> None:
        """Route one setting; ``where`` names its source for error messages."""
        head, dot, rest = key.strip().partition(".")
        if head == "augment":
            self._set_augment(rest if dot else None, value, where)
        elif head in ("model", "model_args") and dot:
            self._set_arg(rest, value, where)
        elif head == "model_args":
            for k, v in _mapping(value, f"{where}: model_args").items():
                self._set_arg(str(k), v, where)
        elif head == "model":
            if isinstance(value, dict):
                for k, v in value.items():
                    if k != "name":
                        self._set_arg(str(k), v, where)
        elif head in TRAIN_KEYS and not dot:
            self.train[head] = value
        elif head in self.ctor_keys and not dot:
            self.model_args[head] = value
        else:
            raise ConfigError(
                f"{where}: unknown setting {key!r} for {self.model}; valid settings: "
                f"{', '.join(sorted({*TRAIN_KEYS, *self.ctor_keys}))}, augment.<"
                f"{'|'.join(AUGMENT_KEYS)}>, model.<argument>"
            )

    def _set_arg(self, key: str, value: Any, where: str) -> None:
        if key not in self.ctor_keys:
            raise ConfigError(
                f"{where}: {self.model} has no argument {key!r}; its arguments: "
                f"{', '.join(sorted(self.ctor_keys)) or 'none'}"
            )
        self.model_args[key] = value

    def _set_augment(self, key: str | None, value: Any, where: str) -> None:
        if key is None and isinstance(value, str):
            self.augment, self.augment_where = {"preset": value}, where
            return
        items = _mapping(value, f"{where}: augment") if key is None else {key: value}
        if "preset" in items:
            self.augment, self.augment_where = {}, where
        for k, v in items.items():
            if k not in AUGMENT_KEYS:
                raise ConfigError(
                    f"{where}: unknown augmentation setting {k!r}; valid: {', '.join(AUGMENT_KEYS)}"
                )
            self.augment[k] = v


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping of settings, got {value!r}")
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML mapping of settings; ConfigError naming the file otherwise."""
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({exc})") from None
    except (RecursionError, ValueError) as exc:
        raise ConfigError(f"--config {path}: {_too_much(exc)}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"--config {path}: expected a mapping of settings, got {loaded!r}")
    return loaded


def _too_much(exc: BaseException) -> str:
    """What PyYAML lets escape from hostile text, in words: nesting past the recursion
    limit, or an integer of more digits than Python converts."""
    if isinstance(exc, RecursionError):
        return "nested too deep"
    return f"a number has more than {sys.get_int_max_str_digits()} digits"


def _start(text: str) -> str:
    return repr(text if len(text) <= 30 else text[:30] + "...")


def split_sets(sets: Sequence[str]) -> list[tuple[str, Any]]:
    """``["lr=3e-4", ...]`` -> ``[("lr", 0.0003), ...]``."""
    out = []
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set lr=3e-4")
        out.append((key.strip(), parse_value(text)))
    return out


def choose_model(
    model: str | None, file_values: dict[str, Any], sets: list[tuple[str, Any]], fallback: str
) -> str:
    """The model name: ``--model``, else ``--set model=``, else the file's, else ``fallback``."""
    named = [v for k, v in sets if k == "model" and isinstance(v, str)]
    in_file = file_values.get("model")
    if isinstance(in_file, dict):
        in_file = in_file.get("name")
    return model or (named[-1] if named else None) or in_file or fallback


def resolve_config(
    model: str | None = None,
    file: str | Path | None = None,
    sets: Sequence[str] | None = None,
    *,
    fallback_model: str = "cnn-fast",
    recipe: Mapping[str, Any] | None = None,
    **flags: Any,
) -> TrainConfig:
    """The run's configuration from the layers in the module docstring.

    recipe: the dataset's preprocessing recipe, which settles an "auto" augmentation
    preset (``data_preset``; settings given on top of it are kept). flags:
    command-line values such as ``epochs=5``, ``seed=1`` or ``augment="flip-crop"``
    (None = not given).
    """
    from imgclass.models import model_info

    file_values = read_config_file(file) if file else {}
    pairs = split_sets(sets or [])
    name = choose_model(model, file_values, pairs, fallback_model)
    layers = _Layers(name, constructor_keys(name))
    for key, value in model_info(name).default_cfg.items():
        layers.set(key, value, f"the defaults of {name}")
    for key, value in file_values.items():
        layers.set(str(key), value, f"--config {file}")
    for key, value in pairs:
        layers.set(key, value, f"--set {key}")
    for key, value in flags.items():
        if value is not None:
            layers.set(key, value, f"--{key.replace('_', '-')}")
    augment = dict(layers.augment)
    if augment.get("preset") == "auto" and recipe is not None:
        augment["preset"], augment["reason"] = data_preset(recipe)
    augment.setdefault("reason", layers.augment_where)
    return build_config(name, layers.train, augment, layers.model_args)


def build_config(
    model: str, train: dict[str, Any], augment: dict[str, Any], model_args: dict[str, Any]
) -> TrainConfig:
    """Typed, validated TrainConfig from routed settings."""
    hints = typing.get_type_hints(TrainConfig)
    special = ("model", "time_limit", "channels_last")
    kwargs = {k: _coerce(k, v, hints[k]) for k, v in train.items() if k not in special}
    if "time_limit" in train:
        kwargs["time_limit"] = time_limit_seconds(train["time_limit"])
    if "channels_last" in train:
        value = train["channels_last"]  # YAML reads on/off as booleans
        kwargs["channels_last"] = ("on" if value else "off") if isinstance(value, bool) else value
    cfg = TrainConfig(model=model, augment=build_augment(augment), model_args=model_args, **kwargs)
    check_config(cfg)
    return cfg


def time_limit_seconds(value: Any) -> float:
    """``time_limit`` in seconds: a duration (``10m``, ``90s``, ``1h``, ``600``), or 0 /
    ``none`` / ``off`` for no limit."""
    from imgclass.train.budget import parse_duration

    off = isinstance(value, str) and value.strip().lower() in ("0", "none", "off")
    if value is None or value is False or off or (isinstance(value, int | float) and value == 0):
        return 0.0
    return parse_duration(value, "time_limit")


def build_augment(values: dict[str, Any]) -> Augment:
    """An Augment from a preset name plus explicit values (which win over the preset's)."""
    preset = str(values.get("preset", "none"))
    if preset not in AUGMENT_PRESETS:
        raise ConfigError(
            f"augment preset must be one of {', '.join(AUGMENT_PRESETS)}, got {preset!r}"
        )
    hints = typing.get_type_hints(Augment)
    merged: dict[str, Any] = {**AUGMENT_PRESETS[preset], **values, "preset": preset}
    aug = Augment(**{k: _coerce(f"augment.{k}", v, hints[k]) for k, v in merged.items()})
    for key in PROBABILITIES:
        if not 0 <= getattr(aug, key) <= 1:
            raise ConfigError(f"augment.{key} is a probability in [0, 1], got {getattr(aug, key)}")
    if not 0 <= aug.pad_crop < 0.5:
        raise ConfigError(f"augment.pad_crop must be in [0, 0.5), got {aug.pad_crop}")
    if not 0 < aug.crop_scale <= 1:
        raise ConfigError(f"augment.crop_scale must be in (0, 1], got {aug.crop_scale}")
    if not 0 < aug.erasing_area <= 1 or aug.elastic_sigma <= 0:
        raise ConfigError("augment.erasing_area must be in (0, 1] and elastic_sigma positive")
    return aug


def _coerce(name: str, value: Any, kind: Any) -> Any:
    """``value`` as ``kind`` (int, float, bool or str), or a ConfigError naming the key."""
    ok = True
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        ok = isinstance(value, bool)
    elif kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        try:
            value = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            value = None
        ok = value is not None
    elif kind is str:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"{name} must be a {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def check_config(cfg: TrainConfig) -> None:
    """ConfigError for values out of range or not among the choices."""
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(
                f"{key} must be one of {', '.join(allowed)}, got {getattr(cfg, key)!r}"
            )
    checks = [
        (cfg.epochs >= 1, "epochs must be at least 1"),
        (cfg.batch_size >= 1, "batch_size must be at least 1"),
        (cfg.lr > 0, "lr must be positive"),
        (cfg.weight_decay >= 0, "weight_decay must not be negative"),
        (0 <= cfg.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
        (0 <= cfg.val_fraction < 1, "val_fraction must be in [0, 1)"),
        (cfg.warmup >= 0 and cfg.grad_clip >= 0, "warmup and grad_clip must not be negative"),
        (cfg.patience >= 0 and cfg.frozen_epochs >= 0, "patience, frozen_epochs must be >= 0"),
        (cfg.num_threads >= 0 and cfg.workers >= -1, "num_threads >= 0, workers >= -1"),
        (cfg.max_len >= 2, "max_len must be at least 2"),
        (1 <= cfg.cache_views <= 16, "cache_views must be from 1 to 16"),
        (not (cfg.schedule == "plateau" and cfg.warmup), "warmup does not apply to plateau"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{message} (see `imgclass train --help`)")


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML (RUNDIR/config.yaml)."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
