"""First-conv extraction from ONNX graphs and our numpy convolution against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from imgclass.evaluate.filters import activation_maps, conv2d, first_conv, tensor_values


def conv_model(weight, bias, normalise=False, **attrs):
    """input (N, C, H, W) [-> (x - 0.5) / 0.25] -> Conv(weight, bias, attrs) -> Relu ->
    output "probabilities" (the conv output is "conv_out")."""
    c = weight.shape[1] * attrs.get("group", 1)
    nodes, inits = (
        [],
        [
            numpy_helper.from_array(weight.astype(np.float32), "w"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    source = "input"
    if normalise:
        inits += [
            numpy_helper.from_array(np.array(0.5, np.float32), "mean"),
            numpy_helper.from_array(np.array(0.25, np.float32), "std"),
        ]
        nodes += [
            helper.make_node("Sub", ["input", "mean"], ["centred"]),
            helper.make_node("Div", ["centred", "std"], ["normed"]),
        ]
        source = "normed"
    nodes += [
        helper.make_node("Conv", [source, "w", "b"], ["conv_out"], **attrs),
        helper.make_node("Relu", ["conv_out"], ["probabilities"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, "H", "W"])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def ort_values(model, x, name="conv_out"):
    """Reference: ONNX Runtime's value of a tensor (added as an extra output)."""
    model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([name], {"input": x})[0]


CASES = [
    ({}, (4, 1, 3, 3)),
    ({"pads": [1, 1, 1, 1]}, (6, 1, 5, 5)),
    ({"strides": [2, 2], "pads": [1, 2, 0, 1]}, (5, 3, 3, 3)),
    ({"dilations": [2, 2], "pads": [2, 2, 2, 2]}, (3, 2, 3, 3)),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (4, 3, 4, 4)),
    ({"auto_pad": "SAME_LOWER"}, (2, 1, 4, 2)),
    ({"auto_pad": "VALID", "strides": [3, 2]}, (3, 2, 2, 3)),
    ({"group": 2, "pads": [1, 1, 1, 1]}, (4, 2, 3, 3)),
]


@pytest.mark.parametrize(("attrs", "shape"), CASES)
def test_conv2d_matches_onnx_runtime(attrs, shape):
    rng = np.random.default_rng(len(str(attrs)))
    weight = rng.normal(size=shape).astype(np.float32)
    bias = rng.normal(size=shape[0]).astype(np.float32)
    model = conv_model(weight, bias, **attrs)
    x = rng.random((2, shape[1] * attrs.get("group", 1), 11, 13)).astype(np.float32)
    conv = first_conv(model)
    assert conv is not None
    np.testing.assert_array_equal(conv.weight, weight)
    np.testing.assert_array_equal(conv.bias, bias)
    expected = ort_values(model, x)
    ours = conv2d(x, conv)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(activation_maps(x, conv), np.maximum(expected, 0), atol=1e-5)


def test_conv_by_hand():
    # A 2x2 kernel [[1, 2], [3, 4]] on a 3x3 ramp 0..8 without padding: the top-left
    # output is 0*1 + 1*2 + 3*3 + 4*4 = 27, and each step right adds 1 * (1+2+3+4) = 10,
    # each step down 3 * 10 = 30. Bias 1.
    weight = np.array([[[[1, 2], [3, 4]]]], np.float32)
    conv = first_conv(conv_model(weight, np.array([1.0])))
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(conv2d(x, conv)[0, 0], [[28, 38], [58, 68]])


def test_conv_input_after_in_graph_normalisation():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(3, 1, 3, 3)).astype(np.float32)
    model = conv_model(weight, np.zeros(3), normalise=True, pads=[1, 1, 1, 1])
    conv = first_conv(model)
    assert conv.input_name == "normed"
    x = rng.random((2, 1, 8, 8)).astype(np.float32)
    seen = tensor_values(model, {"input": x}, conv.input_name)
    np.testing.assert_allclose(seen, (x - 0.5) / 0.25, rtol=1e-6)
    np.testing.assert_allclose(conv2d(seen, conv), ort_values(model, x), rtol=1e-5, atol=1e-5)


def test_weights_given_as_constant_nodes_and_identity():
    weight = np.ones((2, 1, 3, 3), np.float32)
    model = conv_model(weight, np.zeros(2))
    del model.graph.initializer[:]
    model.graph.node.insert(
        0, helper.make_node("Constant", [], ["w0"], value=numpy_helper.from_array(weight))
    )
    model.graph.node.insert(1, helper.make_node("Identity", ["w0"], ["w"]))
    conv = first_conv(model)
    assert conv is not None and conv.weight.shape == (2, 1, 3, 3)
    np.testing.assert_array_equal(conv.bias, [0, 0])  # "b" is unknown: taken as no bias


def test_graphs_without_a_2d_conv():
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["input"], ["probabilities"])],
        "plain",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
    )
    assert first_conv(helper.make_model(graph)) is None
    conv1d = conv_model(np.ones((2, 1, 3, 3)), np.zeros(2))
    conv1d.graph.initializer[0].CopyFrom(
        numpy_helper.from_array(np.ones((2, 1, 3), np.float32), "w")
    )
    assert first_conv(conv1d) is None
