"""Session fixtures for the evaluation tests: real MNIST digits, a template bundle
fitted on some of them and a prepared dataset of others (see eval_support.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from eval_support import Digits, image_spec, prepare_npz, save_test_bundle, template_onnx


@pytest.fixture(scope="session")
def digits(shared_data: Path) -> Digits:
    with np.load(shared_data / "mnist.npz") as d:
        train_x, train_y = d["x_train"][:2000], d["y_train"][:2000].astype(np.int64)
        test_x, test_y = d["x_test"][:300], d["y_test"][:300].astype(np.int64)
    labels = [str(i) for i in range(10)]
    return Digits(train_x, train_y, test_x, test_y, template_onnx(train_x, train_y, 10), labels)


@pytest.fixture(scope="session")
def digits_bundle(digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from imgclass.data.preprocess import get_recipe

    out = tmp_path_factory.mktemp("bundles") / "digits"
    return save_test_bundle(out, digits.onnx_bytes, digits.labels, get_recipe("none"), image_spec())


@pytest.fixture(scope="session")
def digits_data(digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared dataset of 300 real MNIST test digits (recipe none: as stored)."""
    tmp = tmp_path_factory.mktemp("data")
    return prepare_npz(tmp, "digits", digits.test_x, digits.test_y, digits.labels)
