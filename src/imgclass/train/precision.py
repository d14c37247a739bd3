"""Mixed precision and memory format on the training device (the GPU path).

``precision`` (TrainConfig): ``fp32``; ``bf16`` or ``fp16`` autocast, the weights staying
float32 (so checkpoints, the ONNX export and the bundle do not change); ``auto`` picks
bf16 on a CUDA device that supports it (Ampere and later: no loss scaling needed), fp16
with a ``GradScaler`` on older ones, and fp32 on CPU, where autocast is slower for the
small convolutional networks trained here.

``channels_last``: NHWC memory format for the model and its input batches, which
tensor cores prefer; ``auto`` turns it on for convolutional models on CUDA only, so the
CPU path stays exactly as it was.

Both work on CPU too when asked for (``--precision bf16``, ``--channels-last on``), which
is how the tests exercise them without a GPU.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from imgclass.errors import ConfigError

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``setting`` on ``device``; None for fp32."""
    if setting == "fp32" or (setting == "auto" and device.type != "cuda"):
        return None
    if setting == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if setting == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision=bf16: this GPU does not support bfloat16; use fp16 or auto")
    return DTYPES[setting]


def is_convolutional(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def wants_channels_last(setting: str, device: torch.device, model: nn.Module) -> bool:
    """Whether to train in channels-last format (convolutional models only)."""
    if setting == "off" or not is_convolutional(model):
        if setting == "on":
            log.info("channels_last=on: the model has no 2-d convolution, left as it is")
        return False
    return setting == "on" or device.type == "cuda"


class Precision:
    """How the training step runs: autocast dtype, loss scaling (fp16 only) and memory
    format. ``Precision.for_run(cfg, device, model)`` resolves the settings."""

    def __init__(self, device: torch.device, dtype: torch.dtype | None, channels_last: bool):
        self.device_type = device.type
        self.dtype = dtype
        self.channels_last = channels_last
        self.scaler: Any = None
        if dtype is torch.float16:
            self.scaler = torch.amp.GradScaler(device.type)

    @classmethod
    def for_run(cls, precision: str, layout: str, device: torch.device, model: nn.Module) -> Any:
        return cls(
            device, autocast_dtype(precision, device), wants_channels_last(layout, device, model)
        )

    @property
    def name(self) -> str:
        """fp32, bf16 or fp16 (what metrics.json records)."""
        names = {torch.bfloat16: "bf16", torch.float16: "fp16"}
        return names.get(self.dtype, "fp32") if self.dtype is not None else "fp32"

    def autocast(self) -> AbstractContextManager[Any]:
        """The forward pass's context: autocast to ``dtype``, or nothing for fp32."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def prepare(self, model: nn.Module) -> None:
        """The model in the training memory format."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def restore(self, model: nn.Module) -> None:
        """Back to the usual (contiguous) format, for export and saved weights."""
        if self.channels_last:
            model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]

    def backward_step(
        self, loss: torch.Tensor, opt: torch.optim.Optimizer, clip: float, model: nn.Module
    ) -> None:
        """Backward pass, optional gradient clipping and the optimizer step, with loss
        scaling under fp16 (a step whose gradients overflowed is skipped)."""
        if self.scaler is None:
            torch.autograd.backward(loss)
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            return
        scaled: torch.Tensor = self.scaler.scale(loss)
        torch.autograd.backward(scaled)
        if clip:
            self.scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        self.scaler.step(opt)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
