"""Helpers for the hostile-input tests of the public endpoints and the CLI's ndjson:
small real bundles (ONNX built with the onnx helper API, saved through save_bundle),
the real app around them, a real uvicorn, and JSON text that ``json.dumps`` cannot
write (integers of thousands of digits, NaN, nesting thousands deep)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from imgclass.testing import HOST, LocalServer
from onnx_support import linear_onnx

DIGITS = [str(d) for d in range(10)]
SKETCHES = ["cat", "dog", "sun"]


class Raw:
    """A JSON token written as is (``1111...`` with 5,000 digits, ``NaN``, ``1e400``)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:20]}{'...' if len(self.text) > 20 else ''})"


class Nest:
    """``value`` inside ``depth`` lists, written without recursion."""

    def __init__(self, value: Any, depth: int) -> None:
        self.value, self.depth = value, depth

    def __repr__(self) -> str:
        return f"Nest({self.value!r}, depth={self.depth})"


def to_json(value: Any) -> str:
    """JSON text of ``value``, where ``Raw`` and ``Nest`` may appear anywhere."""
    import json

    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Nest):
        return "[" * value.depth + to_json(value.value) + "]" * value.depth
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def sequence_onnx(k: int, seed: int = 0) -> bytes:
    """Input (N, T, 5) stroke-5 rows and lengths (N,) -> softmax of (sum over T) @ W."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).normal(0, 0.05, (5, k)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["input", "axes"], ["pooled"], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "sequence",
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", "T", 5]),
            helper.make_tensor_value_info("lengths", TensorProto.INT64, ["N"]),
        ],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", k])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1]), "axes")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def image_bundle(out: Path, dataset: Path | None = None) -> Path:
    """A real gray 28x28 bundle (``mnist`` recipe, ten digits); ``dataset`` is the prepared
    dataset its Explore views read (the digits the root conftest prepares)."""
    from imgclass.bundle import save_bundle
    from imgclass.data.preprocess import get_recipe

    recipe = get_recipe("mnist")
    spec = {"kind": "image", "layout": "nchw", "channels": 1, "size": [28, 28], "scale": 1 / 255}
    return save_bundle(
        out,
        linear_onnx(28, len(DIGITS)),
        DIGITS,
        {"recipe": recipe, "input": spec},
        {"test": {"accuracy": 0.1, "n": 1}},
        _model_json("image", DIGITS, dataset),
    )


def sequence_bundle(out: Path) -> Path:
    """A real stroke-5 sequence bundle (three doodle labels)."""
    from imgclass.bundle import save_bundle
    from imgclass.data.preprocess import get_recipe

    spec = {"kind": "sequence", "format": "stroke5", "max_len": 150}
    return save_bundle(
        out,
        sequence_onnx(len(SKETCHES)),
        SKETCHES,
        {"recipe": get_recipe("sketch"), "input": spec},
        {"test": {"accuracy": 0.3, "n": 1}},
        _model_json("sequence", SKETCHES, None),
    )


def _model_json(kind: str, labels: list[str], dataset: Path | None) -> dict[str, Any]:
    return {
        "name": "linear" if kind == "image" else "toy-rnn",
        "family": "cnn" if kind == "image" else "stroke-rnn",
        "framework": "torch",
        "input_kind": kind,
        "args": {},
        "num_classes": len(labels),
        "dataset": {"path": str(dataset or "nowhere"), "manifest_sha256": "0" * 64},
    }


@contextmanager
def real_server(app: Any) -> Iterator[tuple[str, int]]:
    """``app`` served by a real uvicorn on 127.0.0.1; yields (host, port)."""
    with LocalServer(app, log_level="critical") as srv:
        yield HOST, srv.port
