from __future__ import annotations

import pytest

from imgclass.cli import main


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory):
    """A real bundle: cnn-small trained briefly on the built-in MNIST slice, tracked in the
    session's MLflow store (test_registry_serving registers it from that run)."""
    root = tmp_path_factory.mktemp("serve")
    data = root / "digits"
    assert (
        main(
            [
                "-q",
                "data",
                "prepare",
                "--builtin",
                "digits",
                "--per-class",
                "80",
                "--out",
                str(data),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "-q",
                "train",
                "--data",
                str(data),
                "--model",
                "cnn-small",
                "--out",
                str(root / "run"),
                "--epochs",
                "4",
                "--set",
                "lr=3e-3",
                "--set",
                "num_threads=1",  # two cores shared by many test processes (see the quantize
                # fixture: two OpenMP threads under load spun 6x the CPU of one)
            ]
        )
        == 0
    )
    return root / "run" / "bundle"
