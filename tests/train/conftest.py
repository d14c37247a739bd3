"""Fixtures for the trainer's tests: small real datasets prepared through the store."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every trainer test runs torch on one thread (see tests/conftest.py)."""


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
