"""Export trained models to ONNX: input ``input`` (N, ...) float32, output
``probabilities`` (N, K), dynamic batch axis. Serving then needs only ONNX Runtime."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

OPSET = 17


def export_torch(model: Any, sample: np.ndarray) -> bytes:
    """A torch image classifier (logits) -> ONNX bytes with softmax included."""
    import torch

    class WithSoftmax(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.inner(x), dim=1)

    wrapped = WithSoftmax(model).eval()
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            wrapped,
            (torch.from_numpy(sample[:1]),),
            buffer,  # type: ignore[arg-type]
            input_names=["input"],
            output_names=["probabilities"],
            dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def export_torch_sequence(model: Any, sequences: np.ndarray, lengths: np.ndarray) -> bytes:
    """A torch sequence classifier ``model(x, lengths)`` -> ONNX with inputs ``input``
    (N, T, F) and ``lengths`` (N,), dynamic N and T, softmax included."""
    import torch

    class WithSoftmax(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.inner(x, lengths), dim=1)

    wrapped = WithSoftmax(model).eval()
    buffer = io.BytesIO()
    sample = (torch.from_numpy(sequences[:2]), torch.from_numpy(lengths[:2]))
    with torch.no_grad():
        torch.onnx.export(
            wrapped,
            sample,
            buffer,  # type: ignore[arg-type]
            input_names=["input", "lengths"],
            output_names=["probabilities"],
            dynamic_axes={
                "input": {0: "batch", 1: "steps"},
                "lengths": {0: "batch"},
                "probabilities": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def export_sklearn(model: Any, n_features: int) -> bytes:
    """A fitted scikit-learn classifier with predict_proba -> ONNX bytes (no ZipMap)."""
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )
    graph = onx.graph
    old = graph.output[1].name  # (label, probabilities)
    for node in graph.node:
        node.output[:] = ["probabilities" if o == old else o for o in node.output]
    graph.output[1].name = "probabilities"
    keep = [o for o in graph.output if o.name == "probabilities"]
    del graph.output[:]
    graph.output.extend(keep)
    onnx.checker.check_model(onx)
    return onx.SerializeToString()
