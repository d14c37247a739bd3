"""A recurrent classifier on stroke sequences (stroke-3 or stroke-5).

Inputs: float32 (N, T, F) sequences and int64 (N,) lengths. Padding never counts:
inputs are zeroed past each length, the backward direction reads each sequence
reversed within its own length, and outputs are mean-pooled over the valid steps.
This masking (rather than packed sequences) exports to ONNX with dynamic N and T.
"""

from __future__ import annotations

import torch
from torch import nn

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


class StrokeRNN(nn.Module):
    """Optional Conv1D front, then a (bi)directional LSTM or GRU, masked mean pooling."""

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
    ):
        super().__init__()
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
        outputs = [self.forward_rnn(x)[0]]
        if self.backward_rnn is not None:
            back = self.backward_rnn(reverse_within_length(x, lengths))[0]
            outputs.append(reverse_within_length(back, lengths))
        h = torch.cat(outputs, dim=2) * mask[:, :, None]
        pooled = h.sum(dim=1) / lengths.clamp(min=1)[:, None].float()
        return self.head(pooled)


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
    search_space=lambda trial: {
        "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "hidden": trial.suggest_categorical("hidden", [64, 128, 256]),
        "cell": trial.suggest_categorical("cell", ["gru", "lstm"]),
    },
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
) -> nn.Module:
    """Conv1D + bidirectional GRU over stroke-5 sequences, masked so padding does not count."""
    return StrokeRNN(num_classes, features, hidden, layers, cell, bidirectional, conv, dropout)
