"""Helpers for the evaluation tests: real tiny bundles and prepared datasets.

The models are built with the onnx helper API, no torch: a "template" CNN whose first
layer is four hand-made 3x3 filters (centre pixel, horizontal edge, vertical edge,
blur) followed by ReLU, and whose head scores each class by the distance of those
feature maps to the class's mean features on real training images (a nearest-mean
classifier). The class means are computed here with scipy.ndimage, independently of
the code under test.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILTERS = np.array(
    [
        [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
        [[-1, -1, -1], [0, 0, 0], [1, 1, 1]],
        [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]],
        [[1, 1, 1], [1, 1, 1], [1, 1, 1]],
    ],
    dtype=np.float32,
)
FILTERS[3] /= 9
BIAS = np.array([0.0, 0.0, 0.0, -0.1], dtype=np.float32)
SCALE = 0.05  # logit scale: keeps the probabilities away from exact 0 and 1
SKETCH_CLASSES = ["apple", "star", "sun", "umbrella", "fish"]


def conv_features(x: np.ndarray) -> np.ndarray:
    """ReLU(FILTERS * x + BIAS), zero-padded: x float (n, 28, 28) -> (n, 4 * 28 * 28)."""
    from scipy.ndimage import correlate

    maps = np.stack(
        [
            np.stack(
                [correlate(img, f, mode="constant") + b for f, b in zip(FILTERS, BIAS, strict=True)]
            )
            for img in x.astype(np.float32)
        ]
    )
    return np.maximum(maps, 0).reshape(len(x), -1)


def template_onnx(images: np.ndarray, labels: np.ndarray, k: int) -> bytes:
    """ONNX bytes: input (N, 1, 28, 28) in [0, 1] -> probabilities (N, k)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    feats = conv_features(images / 255.0)
    means = np.stack([feats[labels == c].mean(axis=0) for c in range(k)])
    weight = (means.T * SCALE).astype(np.float32)
    bias = (-(means**2).sum(axis=1) / 2 * SCALE).astype(np.float32)
    inits = [
        numpy_helper.from_array(FILTERS[:, None], "conv.weight"),
        numpy_helper.from_array(BIAS, "conv.bias"),
        numpy_helper.from_array(weight, "head.weight"),
        numpy_helper.from_array(bias, "head.bias"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("MatMul", ["f", "head.weight"], ["m"]),
        helper.make_node("Add", ["m", "head.bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "templates",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", k])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def sequence_onnx(k: int, seed: int = 0) -> bytes:
    """ONNX bytes of a toy sequence model: mean of the stroke-5 rows over the real steps
    (lengths), times a random (5, k) matrix, softmax. Inputs ``input`` and ``lengths``."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).normal(0, 3, (5, k)).astype(np.float32)
    nodes = [
        helper.make_node("ReduceSum", ["input", "axis1"], ["s"], keepdims=0),
        helper.make_node("Cast", ["lengths"], ["lf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["lf", "axis1"], ["l2"]),
        helper.make_node("Div", ["s", "l2"], ["mean"]),
        helper.make_node("MatMul", ["mean", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "seq",
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", "T", 5]),
            helper.make_tensor_value_info("lengths", TensorProto.INT64, ["N"]),
        ],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", k])],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


HISTORY = [
    {
        "epoch": e,
        "train_loss": 2.0 / e,
        "train_accuracy": 1 - 0.5 / e,
        "val_loss": 2.2 / e,
        "val_accuracy": 1 - 0.6 / e,
        "lr": 0.01 / e,
        "seconds": 1.0,
    }
    for e in range(1, 6)
]


def save_test_bundle(
    out: Path, onnx_bytes: bytes, labels: list[str], recipe: dict, input_spec: dict
) -> Path:
    """A bundle through the real save_bundle, with a made-up training history."""
    from imgclass.bundle import save_bundle

    metrics = {"test": {"accuracy": 0.5, "n": 1}, "history": HISTORY, "train_seconds": 5.0}
    model_json = {
        "name": "templates",
        "family": "cnn",
        "framework": "torch",
        "input_kind": input_spec["kind"],
        "args": {},
        "num_classes": len(labels),
        "dataset": {"path": "nowhere", "manifest_sha256": "0" * 64, "classes": labels},
    }
    return save_bundle(
        out, onnx_bytes, labels, {"recipe": recipe, "input": input_spec}, metrics, model_json
    )


def image_spec() -> dict:
    return {"kind": "image", "layout": "nchw", "channels": 1, "size": [28, 28], "scale": 1 / 255}


def prepare_npz(
    tmp: Path,
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    recipe: str = "none",
    split: tuple[int, int, int] = (40, 10, 50),
) -> Path:
    """A prepared dataset made by the real ``prepare`` from an npz of the given images."""
    from imgclass.data.prepare import PrepareOptions, prepare

    src = tmp / f"{name}.npz"
    np.savez(src, x=x, y=y, classes=np.array(classes))
    return prepare(
        PrepareOptions(inputs=[str(src)], out=str(tmp / name), recipe=recipe, split=split, seed=1)
    )


@dataclass
class Digits:
    """Real MNIST digits and a template bundle fitted on other real digits."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    onnx_bytes: bytes
    labels: list[str]


def raw_stroke_lines(shared_data: Path, classes: list[str], per_class: int) -> list[str]:
    """The first ``per_class`` raw ndjson lines of each class from the shared stroke file."""
    taken: dict[str, list[str]] = {c: [] for c in classes}
    with gzip.open(shared_data / "quickdraw_strokes_raw.ndjson.gz", "rt") as f:
        for line in f:
            word = json.loads(line)["word"]
            if word in taken and len(taken[word]) < per_class:
                taken[word].append(line.strip())
            if all(len(v) == per_class for v in taken.values()):
                break
    return [line for c in classes for line in taken[c]]
