"""Fixtures for the trainer's tests: small real datasets prepared through the store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imgclass.cli import main


@pytest.fixture(autouse=True)
def _one_thread():
    """Two cores shared by many test processes: keep torch to one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """The built-in real MNIST digits, 30 per class: train 273, valid 27, test 300."""
    out = tmp_path_factory.mktemp("train-data") / "digits"
    args = ["-q", "data", "prepare", "--builtin", "digits", "--per-class", "30", "--out", str(out)]
    assert main(args) == 0
    return out


@pytest.fixture(scope="session")
def mnist_small(shared_data):
    """512 training and 256 test digits from the real MNIST, uint8 (n, 28, 28)."""
    m = np.load(shared_data / "mnist.npz")
    return (
        m["x_train"][:512],
        m["y_train"][:512].astype(np.int64),
        m["x_test"][:256],
        m["y_test"][:256].astype(np.int64),
    )
