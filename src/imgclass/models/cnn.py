"""Convolutional networks for 28x28 sketches and digits (any square size works).

Inputs are float32 (N, C, H, W) in [0, 1]; outputs are logits (N, K).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from imgclass.errors import ConfigError
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
    halving the resolution), global average pooling, dropout and a linear head.
    stem_stride=2 starts the first stage at half the resolution (about 4x cheaper)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        width: int = 32,
        depth: int = 1,
        dropout: float = 0.1,
        stem_stride: int = 1,
    ):
        super().__init__()
        widths = [width, width * 2, width * 4]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False),
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


def conv_bn_relu(
    cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1
) -> list[nn.Module]:
    """A convolution without bias, batch norm and ReLU (the bias would be cancelled by BN)."""
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class SeparableBlock(nn.Module):
    """A depthwise 3x3 convolution (``stride``) then a pointwise 1x1 one, each with batch
    norm and ReLU (MobileNet v1); a shortcut adds the input when the shape is unchanged.
    ``separable=False`` makes it one plain 3x3 convolution instead, for comparison."""

    def __init__(self, cin: int, cout: int, stride: int, separable: bool = True):
        super().__init__()
        if separable:
            layers = conv_bn_relu(cin, cin, 3, stride, groups=cin) + conv_bn_relu(cin, cout, 1)
        else:
            layers = conv_bn_relu(cin, cout, 3, stride)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out + x if self.residual else out


class FastCNN(nn.Module):
    """The default network for bitmaps, designed for accuracy per second of CPU training.

    A stride-2 stem (3x3, ``width`` channels) takes 28x28 straight to 14x14, where the
    full-resolution stage of cnn-resnet spent 40% of its cost; then three stages of
    depthwise-separable blocks at width, 2x and 4x ``width`` channels (14x14, 7x7, 4x4 on
    28x28 inputs), ``depths`` blocks each, the first of stages 2 and 3 halving the
    resolution; global average pooling, dropout and a linear head. The weights are kept
    channels-last, which is what makes depthwise convolutions fast on CPUs (oneDNN);
    ONNX export does not see the memory format. At the default width 48: 82K parameters
    and 2.3M multiply-adds per 28x28 image (cnn-resnet: 0.3M and 37M). Width 48 rather
    than 32: more accurate at the same CPU time on doodles20 (75% against 70%, 20
    CPU-seconds each, measured without augmentation; 66% against 63% with the affine
    augmentation training uses, 400 test drawings, one standard error 2.4 points) and
    more capacity for long budgets, at 1.3-2x the cost per image; width 32 is the
    faster choice (``bench/bench_arch.py`` has both, and batch sizes 64-256).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        width: int = 48,
        depths: Sequence[int] = (1, 2, 2),
        separable: bool = True,
        dropout: float = 0.1,
        channels_last: bool = True,
    ):
        super().__init__()
        if len(depths) != 3 or min(depths) < 1:
            raise ConfigError(f"depths must be three block counts of at least 1, not {depths!r}")
        self.stem = nn.Sequential(*conv_bn_relu(in_channels, width, 3, 2))
        blocks: list[nn.Module] = []
        cin = width
        for stage, count in enumerate(depths):
            cout = width * 2**stage
            for i in range(int(count)):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(SeparableBlock(cin, cout, stride, separable))
                cin = cout
        self.stages = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes)
        )
        if channels_last:  # what Module.to(memory_format=...) does, to the 4-d weights
            for p in self.parameters():
                if p.dim() == 4:
                    p.data = p.data.contiguous(memory_format=torch.channels_last)

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


# The training recipe of the batch-norm families (cnn-resnet, cnn-fast): AdamW, one-cycle,
# label smoothing, augmentation chosen from the dataset's recipe.
RESIDUAL_RECIPE: dict[str, Any] = {
    "optimizer": "adamw",
    "lr": 3e-3,
    "weight_decay": 5e-4,
    "schedule": "onecycle",
    "batch_size": 64,
    "epochs": 30,
    "label_smoothing": 0.1,
    "augment": "auto",  # the data decides: affine for drawings, flip-crop for things
}


@register_model(
    "cnn-resnet",
    family="cnn",
    default_cfg=RESIDUAL_RECIPE,
    search_space=resnet_space,
    test_cfg={"width": 8},
)
def cnn_resnet(
    num_classes: int,
    in_channels: int = 1,
    width: int = 32,
    depth: int = 1,
    dropout: float = 0.1,
    stem_stride: int = 1,
) -> nn.Module:
    """A small ResNet (32-64-128, batch norm, global average pooling), the former default."""
    return SmallResNet(num_classes, in_channels, width, depth, dropout, stem_stride)


def fast_space(trial: Any) -> dict[str, Any]:
    """cnn-fast: the CNN space plus its width."""
    return {**cnn_space(trial), "model.width": trial.suggest_categorical("width", [32, 48, 64])}


@register_model(
    "cnn-fast",
    family="cnn",
    default_cfg=RESIDUAL_RECIPE,
    search_space=fast_space,
    test_cfg={"width": 16},  # at width 8 the depthwise blocks learn too slowly for it
)
def cnn_fast(
    num_classes: int,
    in_channels: int = 1,
    width: int = 48,
    depths: Sequence[int] = (1, 2, 2),
    separable: bool = True,
    dropout: float = 0.1,
    channels_last: bool = True,
) -> nn.Module:
    """Stride-2 stem and depthwise-separable blocks: the default for bitmaps (fast on CPUs)."""
    return FastCNN(num_classes, in_channels, width, depths, separable, dropout, channels_last)
