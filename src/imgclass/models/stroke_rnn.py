"""A recurrent classifier on stroke sequences (stroke-3 or stroke-5).

Inputs: float32 (N, T, F) sequences and int64 (N,) lengths. Padding never counts:
inputs are zeroed past each length, the backward direction reads each sequence
reversed within its own length, and outputs are pooled over the valid steps only
(their mean, or the last step of each direction). This masking, rather than packed
sequences, exports to ONNX with dynamic N and T.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from imgclass.errors import ConfigError
from imgclass.models.registry import register_model


def valid_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(N, T) float mask, 1 on the real steps."""
    return (torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]).float()


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence's first ``length`` steps; padding stays at the end."""
    steps = x.shape[1]
    t = torch.arange(steps, device=x.device)[None, :]
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return torch.gather(x, 1, idx[:, :, None].expand(-1, -1, x.shape[2]))


def last_valid(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The output at each sequence's last real step: (N, T, H) -> (N, H)."""
    idx = (lengths.clamp(min=1) - 1)[:, None, None].expand(-1, 1, h.shape[2])
    return torch.gather(h, 1, idx)[:, 0]


class StrokeRNN(nn.Module):
    """Optional Conv1D front, then a (bi)directional LSTM or GRU, masked pooling.

    features: 5 for stroke-5 (dx, dy, p1, p2, p3), 3 for stroke-3 (dx, dy, pen_lifted).
    pooling: "mean" over the valid steps, or "last" (the forward direction's last
    valid step and the backward direction's first, i.e. each direction's final state).
    """

    def __init__(
        self,
        num_classes: int,
        features: int = 5,
        hidden: int = 128,
        layers: int = 2,
        cell: str = "gru",
        bidirectional: bool = True,
        conv: bool = True,
        dropout: float = 0.2,
        pooling: str = "mean",
    ):
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ConfigError(f"cell must be 'gru' or 'lstm', got {cell!r}")
        if pooling not in ("mean", "last"):
            raise ConfigError(f"pooling must be 'mean' or 'last', got {pooling!r}")
        self.pooling = pooling
        width = features
        self.convs = nn.ModuleList()
        if conv:
            self.convs.extend(
                [nn.Conv1d(features, 48, 5, padding=2), nn.Conv1d(48, 64, 5, padding=2)]
            )
            width = 64
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.forward_rnn = rnn(
            width, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0
        )
        self.backward_rnn = (
            rnn(width, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0)
            if bidirectional
            else None
        )
        out = hidden * (2 if bidirectional else 1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(out, num_classes))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = valid_mask(lengths, x.shape[1])
        x = x * mask[:, :, None]
        for conv in self.convs:  # re-mask after each layer so padding never leaks back in
            x = torch.relu(conv(x.transpose(1, 2))).transpose(1, 2) * mask[:, :, None]
        forward = self.forward_rnn(x)[0]
        backward = None
        if self.backward_rnn is not None:
            back = self.backward_rnn(reverse_within_length(x, lengths))[0]
            backward = reverse_within_length(back, lengths)
        logits: torch.Tensor = self.head(self.pool(forward, backward, lengths, mask))
        return logits

    def pool(
        self,
        forward: torch.Tensor,
        backward: torch.Tensor | None,
        lengths: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """(N, T, H) outputs of each direction -> (N, H or 2H), padding excluded."""
        if self.pooling == "last":
            parts = [last_valid(forward, lengths)]
            if backward is not None:
                parts.append(backward[:, 0])  # the backward pass ends at step 0
            return torch.cat(parts, dim=1)
        h = forward if backward is None else torch.cat([forward, backward], dim=2)
        return (h * mask[:, :, None]).sum(dim=1) / lengths.clamp(min=1)[:, None].float()


def rnn_space(trial: Any) -> dict[str, Any]:
    """What ``imgclass tune`` searches: optimiser, width, cell, pooling, dropout and the
    strength of the sequence augmentation (0: none, 1: the "sequence" preset doubled)."""
    strength = trial.suggest_float("augment_strength", 0.0, 1.0)
    return {
        "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
        "model.hidden": trial.suggest_categorical("hidden", [64, 128, 256]),
        "model.cell": trial.suggest_categorical("cell", ["gru", "lstm"]),
        "model.pooling": trial.suggest_categorical("pooling", ["mean", "last"]),
        "model.dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "augment.point_jitter": round(0.02 * strength, 5),
        "augment.stroke_dropout": round(0.2 * strength, 4),
    }


@register_model(
    "stroke-rnn",
    family="rnn",
    input_kind="sequence",
    default_cfg={
        "optimizer": "adamw",
        "lr": 2e-3,
        "schedule": "onecycle",
        "epochs": 30,
        "batch_size": 64,
        "max_len": 200,
        "sequence_format": "stroke5",
    },
    search_space=rnn_space,
    test_cfg={"hidden": 24, "layers": 1, "max_len": 60},
)
def stroke_rnn(
    num_classes: int,
    features: int = 5,
    hidden: int = 128,
    layers: int = 2,
    cell: str = "gru",
    bidirectional: bool = True,
    conv: bool = True,
    dropout: float = 0.2,
    pooling: str = "mean",
) -> nn.Module:
    """Conv1D + bidirectional GRU over stroke-5 sequences, masked so padding does not count."""
    return StrokeRNN(
        num_classes, features, hidden, layers, cell, bidirectional, conv, dropout, pooling
    )
