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
import functools
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
        with torch.no_grad(), _expected_exporter_warnings_silenced():
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


@contextlib.contextmanager
def _expected_exporter_warnings_silenced() -> Iterator[None]:
    """Silence, by message, the two warnings the TorchScript exporter always gives here.

    That exporter (``dynamo=False``) is kept on purpose: the torch.export-based one needs
    the onnxscript package, exports at opset 18 or above, took 14 to 70 s per model on
    two cores against about 1 s, and printed torch-internal deprecation warnings of
    its own (torch 2.13, onnxscript 0.7). So its own notice that it is the legacy path
    is expected. The other: every GRU or LSTM export warns that a graph traced with a
    batch other than 1 may fail at another batch size "unless the initial states are
    inputs". Ours start from zeros shaped by the input, and test_stroke_rnn checks the
    graph against torch at batch sizes 1 and 12 and two lengths. Any other warning
    still shows.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="You are using the legacy TorchScript-based ONNX export"
        )
        warnings.filterwarnings(
            "ignore", message="The feature will be removed. Please remove usage of this function"
        )
        warnings.filterwarnings(
            "ignore", message="Exporting a model to ONNX with a batch_size other than 1"
        )
        yield


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
    model = _with_plain_svcs(model)
    onx = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )
    return check_onnx(_keep_probabilities(onx).SerializeToString())


def _with_plain_svcs(model: Any) -> Any:
    """A copy of ``model`` whose calibrated SVCs skl2onnx can convert without touching
    deprecated attributes.

    skl2onnx (1.20) reads ``SVC.probA_`` / ``probB_`` to learn whether an SVC carries
    Platt-scaling parameters; scikit-learn 1.9 deprecated both with ``probability=True``
    (a FutureWarning at every export) and 1.11 removes them. Ours never has them (the
    probabilities come from ``CalibratedClassifierCV``), so each fitted SVC is handed
    over as a ``PlattFreeSVC``, which says so without going through the deprecated
    attributes. The original model is left as it was.
    """
    import copy

    from sklearn.svm import SVC

    model = copy.deepcopy(model)
    plain = _platt_free_svc_class()
    for calibrated in _calibrated_parts(model):
        for part in calibrated.calibrated_classifiers_:
            if type(part.estimator) is SVC:
                swapped = plain.__new__(plain)
                swapped.__dict__.update(part.estimator.__dict__)
                part.estimator = swapped
    return model


def _calibrated_parts(model: Any) -> Iterator[Any]:
    """The fitted CalibratedClassifierCVs in a model, a pipeline or a grid search."""
    if hasattr(model, "best_estimator_"):
        yield from _calibrated_parts(model.best_estimator_)
    for _, step in getattr(model, "steps", ()):
        yield from _calibrated_parts(step)
    if hasattr(model, "calibrated_classifiers_"):
        yield model


@functools.cache
def _platt_free_svc_class() -> Any:
    """``PlattFreeSVC``, registered with skl2onnx under its own alias with skl2onnx's
    own SVC shape calculator, converter and options (the global SVC entry is untouched)."""
    from skl2onnx import update_registered_converter
    from skl2onnx.operator_converters.support_vector_machines import (
        convert_sklearn_svm_classifier,
    )
    from skl2onnx.shape_calculators.support_vector_machines import (
        calculate_sklearn_svm_output_shapes,
    )
    from sklearn.svm import SVC

    class PlattFreeSVC(SVC):  # type: ignore[misc]
        """A fitted SVC without Platt scaling, as skl2onnx is shown it."""

        @property
        def probA_(self) -> np.ndarray:
            return np.empty(0)

        @property
        def probB_(self) -> np.ndarray:
            return np.empty(0)

    options = {
        "zipmap": [True, False, "columns"],
        "nocl": [True, False],
        "output_class_labels": [False, True],
        "raw_scores": [True, False],
    }
    update_registered_converter(
        PlattFreeSVC,
        "ImgclassPlattFreeSVC",
        calculate_sklearn_svm_output_shapes,
        convert_sklearn_svm_classifier,
        options=options,
    )
    return PlattFreeSVC


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


# --- calibration: a temperature inside the graph ---------------------------------------

TEMPERATURE = "imgclass_temperature"  # the initializer holding T (a float32 scalar)
LOGITS = "imgclass_logits"  # the log-probabilities of graphs that end without a Softmax
_FLOOR = 1e-12  # probabilities below this count as this before their log is taken


def with_logits_output(data: bytes) -> bytes:
    """The graph with a second output, its logits: the input of the final Softmax (torch
    graphs), or log(max(p, 1e-12)) for graphs that end otherwise (scikit-learn's).

    Used to fit a temperature on a graph's own scores; ``logits_name`` names the output.
    """
    import onnx

    model = onnx.load_from_string(data)
    name = _logits_of(model.graph)
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
    )
    out: bytes = model.SerializeToString()
    return out


def logits_name(data: bytes) -> str:
    """The name of the output ``with_logits_output`` adds to this graph."""
    import onnx

    return _logits_of(onnx.load_from_string(data).graph)


def apply_temperature(data: bytes, temperature: float) -> bytes:
    """The graph with ``probabilities = softmax(logits / temperature)``.

    The division is a Div by a float32 initializer (``imgclass_temperature``) placed just
    before the final Softmax, so every consumer of model.onnx (ONNX Runtime on the server,
    an int8 bundle, which keeps the output layer in float, onnxruntime-web in a browser)
    gets calibrated probabilities without knowing T. Graphs that end without a Softmax
    (scikit-learn's) get Log, Div and Softmax appended, which is the same thing since
    softmax(log p / T) = p^(1/T) / sum(p^(1/T)). A graph that has a temperature already
    has its value replaced, never a second division added. The value is also recorded
    in the model's metadata (``temperature``).
    """
    import onnx
    from onnx import numpy_helper

    if not (np.isfinite(temperature) and temperature > 0):
        raise ModelError(f"a temperature must be a positive number, got {temperature}")
    model = onnx.load_from_string(data)
    graph = model.graph
    value = numpy_helper.from_array(np.array(temperature, np.float32), TEMPERATURE)
    existing = [t for t in graph.initializer if t.name == TEMPERATURE]
    if existing:
        existing[0].CopyFrom(value)
    else:
        logits = _logits_of(graph)
        graph.initializer.append(value)
        scaled = f"{logits}_over_temperature"
        softmax = _producer(graph, "probabilities")
        softmax.input[0] = scaled
        at = list(graph.node).index(softmax)
        graph.node.insert(at, onnx.helper.make_node("Div", [logits, TEMPERATURE], [scaled]))
    _set_metadata(model, "temperature", repr(float(np.float32(temperature))))
    return check_onnx(model.SerializeToString())


def graph_temperature(data: bytes) -> float:
    """The temperature a graph applies (1.0 when it has none)."""
    import onnx
    from onnx import numpy_helper

    for tensor in onnx.load_from_string(data).graph.initializer:
        if tensor.name == TEMPERATURE:
            return float(numpy_helper.to_array(tensor))
    return 1.0


_MISSING = object()


def _producer(graph: Any, name: str, default: Any = _MISSING) -> Any:
    """The node computing ``name``; ModelError (or ``default``) when none does."""
    for node in graph.node:
        if name in node.output:
            return node
    if default is not _MISSING:
        return default
    raise ModelError(f"the ONNX graph has no node producing {name!r}")


def _logits_of(graph: Any) -> str:
    """The name of the graph's logits: the final Softmax's input when the graph ends with
    one (the temperature's dividend in a calibrated graph). Graphs that do not (scikit-learn's) are changed in place to end with one: their
    probabilities are renamed ``probabilities_raw`` and recomputed as
    Softmax(Log(Max(raw, 1e-12))), a no-op up to rounding, whose Log gives the logits."""
    import onnx
    from onnx import numpy_helper

    last = _producer(graph, "probabilities")
    if last.op_type == "Softmax":
        before = _producer(graph, last.input[0], None)
        if before is not None and before.op_type == "Div" and before.input[1] == TEMPERATURE:
            return str(before.input[0])  # a calibrated graph: the logits before T
        return str(last.input[0])
    raw = "probabilities_raw"
    for node in graph.node:
        node.output[:] = [raw if o == "probabilities" else o for o in node.output]
        node.input[:] = [raw if i == "probabilities" else i for i in node.input]
    floor = numpy_helper.from_array(np.array(_FLOOR, np.float32), "imgclass_probability_floor")
    graph.initializer.append(floor)
    graph.node.extend(
        [
            onnx.helper.make_node("Max", [raw, floor.name], ["probabilities_floored"]),
            onnx.helper.make_node("Log", ["probabilities_floored"], [LOGITS]),
            onnx.helper.make_node("Softmax", [LOGITS], ["probabilities"], axis=1),
        ]
    )
    return LOGITS


def _set_metadata(model: Any, key: str, value: str) -> None:
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = value
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value
