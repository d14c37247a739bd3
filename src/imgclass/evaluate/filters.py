"""A CNN's first convolution, read from its ONNX graph, and what it responds to.

Evaluation never needs torch: the filters are the weights of the first ``Conv`` node
of model.onnx (its initializers, as exported; batch norm may be folded into them),
and the activation maps are that convolution recomputed in numpy (bias, then ReLU)
on the tensor the node actually reads, so normalisation done inside the graph counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FirstConv:
    """The first 2-D convolution of a graph.

    weight: float32 (F, C / group, kh, kw); bias: float32 (F,) (zeros when absent);
    pads: (top, left, bottom, right) when explicit, None for ``auto_pad`` SAME_*;
    input_name/output_name: the tensors the node reads and writes.
    """

    weight: np.ndarray
    bias: np.ndarray
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, int, int, int] | None
    auto_pad: str
    group: int
    input_name: str
    output_name: str


def _constants(graph: Any) -> dict[str, np.ndarray]:
    """Tensors known without running the graph: initializers, Constant and Identity
    outputs, and DequantizeLinear of constants (the weights of an int8 QDQ model)."""
    from onnx import helper, numpy_helper

    known = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            known[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in known:
            known[node.output[0]] = known[node.input[0]]
        elif node.op_type == "DequantizeLinear" and all(i in known for i in node.input if i):
            axis = next((helper.get_attribute_value(a) for a in node.attribute
                         if a.name == "axis"), 1)  # fmt: skip
            known[node.output[0]] = _dequantize(known, list(node.input), int(axis))
    return known


def _dequantize(known: dict[str, np.ndarray], inputs: list[str], axis: int) -> np.ndarray:
    """(x - zero_point) * scale, per channel along ``axis`` when the scale is a vector."""
    x = known[inputs[0]].astype(np.float32)
    scale = known[inputs[1]].astype(np.float32)
    zero = known[inputs[2]].astype(np.float32) if len(inputs) > 2 and inputs[2] else 0.0
    if np.ndim(scale) == 1 and x.ndim > 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zero = np.reshape(zero, shape) if np.ndim(zero) == 1 else zero
    return np.asarray((x - zero) * scale, dtype=np.float32)


def first_conv(model: Any) -> FirstConv | None:
    """The first ``Conv`` node with constant 4-D weights in an ``onnx.ModelProto``
    (nodes are stored in topological order), or None when the graph has none
    (pca-svm, sequence models)."""
    from onnx import helper

    known = _constants(model.graph)
    for node in model.graph.node:
        if node.op_type != "Conv" or node.input[1] not in known:
            continue
        weight = np.asarray(known[node.input[1]], dtype=np.float32)
        if weight.ndim != 4:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        has_bias = len(node.input) > 2 and node.input[2] in known
        bias = known[node.input[2]] if has_bias else np.zeros(len(weight))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        pads = attrs.get("pads", [0, 0, 0, 0])
        return FirstConv(
            weight=weight,
            bias=np.asarray(bias, dtype=np.float32),
            strides=tuple(attrs.get("strides", [1, 1])),
            dilations=tuple(attrs.get("dilations", [1, 1])),
            pads=(pads[0], pads[1], pads[2], pads[3]) if auto_pad in ("NOTSET", "VALID") else None,
            auto_pad=auto_pad,
            group=int(attrs.get("group", 1)),
            input_name=node.input[0],
            output_name=node.output[0],
        )
    return None


def _same_pads(size: int, kernel: int, stride: int, dilation: int, upper: bool) -> tuple[int, int]:
    """ONNX's SAME_UPPER / SAME_LOWER padding of one axis: output = ceil(size / stride)."""
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - size)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


def _resolve_pads(conv: FirstConv, height: int, width: int) -> tuple[int, int, int, int]:
    if conv.auto_pad == "VALID":
        return (0, 0, 0, 0)
    if conv.pads is not None:
        return conv.pads
    upper = conv.auto_pad == "SAME_UPPER"
    kh, kw = conv.weight.shape[2:]
    top, bottom = _same_pads(height, kh, conv.strides[0], conv.dilations[0], upper)
    left, right = _same_pads(width, kw, conv.strides[1], conv.dilations[1], upper)
    return (top, left, bottom, right)


def conv2d(x: np.ndarray, conv: FirstConv) -> np.ndarray:
    """The convolution (ONNX ``Conv`` semantics, i.e. cross-correlation) plus bias.

    x: float array (n, C, H, W). Returns float32 (n, F, H', W').
    """
    from numpy.lib.stride_tricks import sliding_window_view

    x = np.asarray(x, dtype=np.float32)
    top, left, bottom, right = _resolve_pads(conv, x.shape[2], x.shape[3])
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    (sh, sw), (dh, dw) = conv.strides, conv.dilations
    kh, kw = conv.weight.shape[2:]
    span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    windows = sliding_window_view(padded, span, axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    per_group_in = conv.weight.shape[1]
    per_group_out = len(conv.weight) // conv.group
    outs = []
    for g in range(conv.group):
        part = windows[:, g * per_group_in : (g + 1) * per_group_in]
        w = conv.weight[g * per_group_out : (g + 1) * per_group_out]
        outs.append(np.einsum("nchwij,fcij->nfhw", part, w, optimize=True))
    out: np.ndarray = np.concatenate(outs, axis=1) + conv.bias[None, :, None, None]
    return out.astype(np.float32)


def activation_maps(x: np.ndarray, conv: FirstConv) -> np.ndarray:
    """ReLU(conv2d(x)): what each first-layer filter responds to, float32 (n, F, H', W')."""
    maps: np.ndarray = np.maximum(conv2d(x, conv), 0.0)
    return maps


def tensor_values(model: Any, feeds: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The value of an intermediate tensor ``name`` of an ONNX model for ``feeds``, by
    running a copy of the model that also outputs it (ONNX Runtime, no torch)."""
    import onnx
    import onnxruntime as ort

    if name in feeds:
        return feeds[name]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.append(onnx.ValueInfoProto(name=name))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run([name], feeds)[0])
