"""Helpers for the durability and security tests: a small real bundle (an ONNX linear
model built with the onnx helper API and saved through save_bundle, no training), a
free port, and a real uvicorn serving an app on 127.0.0.1."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from imgclass.testing import LocalServer
from imgclass.testing import free_port as free_port  # the hostile tests import it from here

DIGITS = [str(d) for d in range(10)]
STROKES = [[[10, 60, 120], [20, 90, 200]]]


def digits_bundle(out: Path) -> Path:
    """A real gray 28x28 bundle (``mnist`` recipe, the ten digits as labels)."""
    from onnx import TensorProto, helper, numpy_helper

    from imgclass.bundle import save_bundle
    from imgclass.data.preprocess import get_recipe

    w = np.random.default_rng(0).normal(0, 0.05, (28 * 28, 10)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["f"]),
            helper.make_node("MatMul", ["f", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    spec = {"kind": "image", "layout": "nchw", "channels": 1, "size": [28, 28], "scale": 1 / 255}
    model = {
        "name": "linear",
        "family": "cnn",
        "framework": "torch",
        "input_kind": "image",
        "args": {},
        "num_classes": 10,
        "dataset": {"path": "nowhere", "manifest_sha256": "0" * 64},
    }
    return save_bundle(
        out,
        onnx.SerializeToString(),
        DIGITS,
        {"recipe": get_recipe("mnist"), "input": spec},
        {"test": {"accuracy": 0.1, "n": 1}},
        model,
    )


def wait_for(url: str, seconds: float = 30.0) -> None:
    """Until ``url`` answers (any status), or AssertionError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {seconds} s")


@contextmanager
def real_server(app: Any, **config: Any) -> Iterator[int]:
    """``app`` served by a real uvicorn on 127.0.0.1 (``config``: more uvicorn.Config
    arguments); yields the port."""
    with LocalServer(app, log_level="critical", **config) as srv:
        yield srv.port
