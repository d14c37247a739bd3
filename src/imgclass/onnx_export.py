"""Export trained models to ONNX, so serving needs only ONNX Runtime.

Every exported graph has input ``input`` (plus ``lengths`` for sequence models) and
output ``probabilities`` float32 (N, K) (softmax included), a dynamic batch axis (and
a dynamic length axis for sequences), opset 17, and passes ``onnx.checker``.

- image models (torch): ``input`` float32 (N, C, H, W) in [0, 1];
- sequence models (torch): ``input`` float32 (N, T, F) and ``lengths`` int64 (N,);
- scikit-learn classifiers: ``input`` float32 (N, n_features), via skl2onnx without
  the ZipMap (a plain probability tensor, like the torch graphs).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

import numpy as np

from imgclass.errors import ModelError

OPSET = 17


def export_onnx(model: Any, sample: np.ndarray, lengths: np.ndarray | None = None) -> bytes:
    """Any registered model -> ONNX bytes; the framework is told by the model's type.

    sample: a few inputs the way the model takes them (images (n, C, H, W) or flat
        (n, F) for scikit-learn; padded sequences (n, T, F) with ``lengths`` (n,)).
    """
    if hasattr(model, "predict_proba"):
        return export_sklearn(model, int(np.prod(sample.shape[1:])))
    if lengths is not None:
        return export_torch_sequence(model, sample, lengths)
    return export_torch(model, sample)


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Export in eval mode (dropout off, batch-norm statistics fixed), then restore."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _torch_to_onnx(
    wrapped: Any, args: tuple[Any, ...], inputs: list[str], dynamic: dict[str, dict[int, str]]
) -> bytes:
    import torch

    buffer = io.BytesIO()
    try:
        with torch.no_grad():
            torch.onnx.export(
                wrapped,
                args,
                buffer,  # type: ignore[arg-type]
                input_names=inputs,
                output_names=["probabilities"],
                dynamic_axes={**dynamic, "probabilities": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,  # the TorchScript exporter gives a compact, clean graph here
            )
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ModelError(
            f"{type(wrapped.inner).__name__} cannot be exported to ONNX: {exc}"
        ) from exc
    return check_onnx(buffer.getvalue())


def export_torch(model: Any, sample: np.ndarray) -> bytes:
    """A torch image classifier (logits) -> ONNX bytes with softmax included.

    sample: float32 (n, C, H, W); only its first row is traced.
    """
    import torch

    class WithSoftmax(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.inner(x), dim=1)

    x = torch.from_numpy(np.ascontiguousarray(sample[:1], dtype=np.float32))
    with _eval_mode(model):
        return _torch_to_onnx(WithSoftmax(model), (x,), ["input"], {"input": {0: "batch"}})


def export_torch_sequence(model: Any, sequences: np.ndarray, lengths: np.ndarray) -> bytes:
    """A torch sequence classifier ``model(x, lengths)`` -> ONNX with inputs ``input``
    (N, T, F) and ``lengths`` (N,), dynamic N and T, softmax included.

    sequences: float32 (n, T, F) padded; lengths: int (n,). The first two are traced
    (two rows, so the batch axis is not specialised to 1).
    """
    import torch

    class WithSoftmax(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.inner(x, lengths), dim=1)

    x = torch.from_numpy(np.ascontiguousarray(sequences[:2], dtype=np.float32))
    n = torch.from_numpy(np.asarray(lengths[:2], dtype=np.int64))
    dynamic = {"input": {0: "batch", 1: "steps"}, "lengths": {0: "batch"}}
    with _eval_mode(model):
        return _torch_to_onnx(WithSoftmax(model), (x, n), ["input", "lengths"], dynamic)


def export_sklearn(model: Any, n_features: int) -> bytes:
    """A fitted scikit-learn classifier with predict_proba -> ONNX bytes (no ZipMap).

    Works for the pca-svm pipeline and a GridSearchCV over it (skl2onnx converts both).
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    classes = getattr(model, "classes_", None)
    if classes is None:
        raise ModelError(f"{type(model).__name__} is not fitted; fit it before exporting")
    if np.asarray(classes).dtype.kind == "u":  # skl2onnx takes them for strings
        raise ModelError(
            f"{type(model).__name__} was fitted on {np.asarray(classes).dtype} labels; "
            "fit it on int64 labels so that it can be exported"
        )
    onx = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )
    return check_onnx(_keep_probabilities(onx).SerializeToString())


def _keep_probabilities(onx: Any) -> Any:
    """skl2onnx outputs (label, probabilities): rename the second, drop the first."""
    graph = onx.graph
    old = graph.output[1].name
    for node in graph.node:
        node.output[:] = ["probabilities" if o == old else o for o in node.output]
    graph.output[1].name = "probabilities"
    keep = [o for o in graph.output if o.name == "probabilities"]
    del graph.output[:]
    graph.output.extend(keep)
    return onx


def check_onnx(data: bytes) -> bytes:
    """Run ``onnx.checker`` (full check, with shape inference) on serialised bytes."""
    import onnx

    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelError(f"the exported ONNX graph is invalid: {exc}") from exc
    return data
