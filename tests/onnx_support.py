"""Tiny real ONNX models for the tests that need a bundle but not a trained network."""

from __future__ import annotations

import numpy as np


def linear_onnx(side: int, k: int, channels: int = 1, seed: int = 0) -> bytes:
    """ONNX bytes: input (N, channels, side, side) -> softmax of a fixed random linear map
    (N, k), its weights drawn from ``seed``."""
    from onnx import TensorProto, helper, numpy_helper

    shape = (channels * side * side, k)
    w = np.random.default_rng(seed).normal(0, 0.05, shape).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["f"]),
            helper.make_node("MatMul", ["f", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", channels, side, side])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", k])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
