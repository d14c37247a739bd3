"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def _shared_data_dir() -> Path:
    return (REPO.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets in ../shared/data (skips the test where they are absent)."""
    path = _shared_data_dir()
    if not (path / "mnist.npz").exists():
        pytest.skip(f"real data not found at {path}")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session", autouse=True)
def _tracking_store(tmp_path_factory):
    """`imgclass train` records an MLflow run by default: tests keep those runs in a
    temporary store (MLFLOW_TRACKING_URI), never in the repository's work/mlflow."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


@pytest.fixture
def one_torch_thread():
    """Two cores shared by many test processes: keep torch to one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """The built-in real MNIST digits, 30 per class: train 273, valid 27, test 300."""
    from imgclass.cli import main

    out = tmp_path_factory.mktemp("digits-data") / "digits"
    args = ["-q", "data", "prepare", "--builtin", "digits", "--per-class", "30", "--out", str(out)]
    assert main(args) == 0
    return out
