"""Convolutional networks for 28x28 sketches and digits (any square size works).

Inputs are float32 (N, C, H, W) in [0, 1]; outputs are logits (N, K).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from imgclass.models.registry import register_model


class SmallCNN(nn.Module):
    """The Pictionary project's network: conv 32@3x3, pool, conv 64@3x3, pool, dropout, dense.

    Its README says 35,836 parameters for 20 classes; its own layer table adds up to
    50,836 (320 + 18,496 + 32,020), which is what these layers have.
    """

    def __init__(
        self, num_classes: int, in_channels: int = 1, input_size: int = 28, dropout: float = 0.5
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = ((input_size - 2) // 2 - 2) // 2
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(64 * side * side, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(x))
        return logits


class ThreeConvCNN(nn.Module):
    """The 100-category Quick, Draw! project's network: three conv+pool blocks, dense 128."""

    def __init__(
        self, num_classes: int, in_channels: int = 1, input_size: int = 28, dropout: float = 0.0
    ):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for width in (16, 32, 64):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*layers)
        side = input_size // 8
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(x))
        return logits


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut (projected when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A small ResNet: a stem, three stages (32-64-128 channels by default, the last two
    halving the resolution), global average pooling, dropout and a linear head."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        width: int = 32,
        depth: int = 1,
        dropout: float = 0.1,
    ):
        super().__init__()
        widths = [width, width * 2, width * 4]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        cin = widths[0]
        for stage, cout in enumerate(widths):
            for i in range(depth):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.stages = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.stages(self.stem(x)))
        return logits


# The "affine" augmentation preset at full strength (imgclass.train.config.AUGMENT_PRESETS);
# a search scales all four together, one knob instead of four correlated ones.
AFFINE_FULL = {"rotation": 15.0, "scale": 0.15, "shear": 8.0, "shift": 3.0}


def _lr_wd_space(trial: Any) -> dict[str, Any]:
    """Optimiser settings every CNN is searched over (``--set``-style keys)."""
    return {
        "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
    }


def _augment_space(trial: Any) -> dict[str, Any]:
    """Affine augmentation strength from 0 (none) to 1 (the affine preset)."""
    strength = trial.suggest_float("augment_strength", 0.0, 1.0)
    return {f"augment.{k}": round(v * strength, 4) for k, v in AFFINE_FULL.items()}


def cnn_space(trial: Any) -> dict[str, Any]:
    """cnn-small and cnn-3conv: optimiser, dropout and augmentation strength."""
    return {
        **_lr_wd_space(trial),
        "model.dropout": trial.suggest_float("dropout", 0.0, 0.6),
        **_augment_space(trial),
    }


def resnet_space(trial: Any) -> dict[str, Any]:
    """cnn-resnet: the CNN space plus the width of the first stage."""
    return {**cnn_space(trial), "model.width": trial.suggest_categorical("width", [24, 32, 48])}


@register_model(
    "cnn-small",
    family="cnn",
    default_cfg={"optimizer": "adam", "lr": 1e-3, "schedule": "none", "epochs": 10},
    search_space=cnn_space,
)
def cnn_small(
    num_classes: int, in_channels: int = 1, input_size: int = 28, dropout: float = 0.5
) -> nn.Module:
    """The Pictionary project's two-conv network (50,836 parameters for 20 classes)."""
    return SmallCNN(num_classes, in_channels, input_size, dropout)


@register_model(
    "cnn-3conv",
    family="cnn",
    default_cfg={"optimizer": "adam", "lr": 1e-3, "schedule": "none", "epochs": 10},
    search_space=cnn_space,
)
def cnn_3conv(
    num_classes: int, in_channels: int = 1, input_size: int = 28, dropout: float = 0.0
) -> nn.Module:
    """Three conv+pool blocks and a dense layer of 128 (the 100-category Quick, Draw! project)."""
    return ThreeConvCNN(num_classes, in_channels, input_size, dropout)


@register_model(
    "cnn-resnet",
    family="cnn",
    default_cfg={
        "optimizer": "adamw",
        "lr": 3e-3,
        "weight_decay": 5e-4,
        "schedule": "onecycle",
        "batch_size": 64,
        "epochs": 30,
        "label_smoothing": 0.1,
        "augment": "auto",  # the data decides: affine for drawings, flip-crop for things
    },
    search_space=resnet_space,
    test_cfg={"width": 8},
)
def cnn_resnet(
    num_classes: int, in_channels: int = 1, width: int = 32, depth: int = 1, dropout: float = 0.1
) -> nn.Module:
    """A small ResNet (32-64-128, batch norm, global average pooling): the default for bitmaps."""
    return SmallResNet(num_classes, in_channels, width, depth, dropout)
