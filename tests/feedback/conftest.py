"""Fixtures for the feedback tests: stores in temporary SQLite files, and small real
bundles (a one-layer ONNX model saved through save_bundle with a real recipe), enough
to check that exported samples are exactly what the server feeds its model."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgclass.feedback.store import FeedbackStore
from onnx_support import linear_onnx

DIGITS = [str(d) for d in range(10)]


def make_bundle(out: Path, recipe_name: str, labels: list[str]) -> Path:
    """A real bundle (save_bundle, loadable by load_bundle) for gray 28x28 inputs."""
    from imgclass.bundle import save_bundle
    from imgclass.data.preprocess import get_recipe

    recipe = get_recipe(recipe_name)
    h, w = recipe["size"]
    spec = {"kind": "image", "layout": "nchw", "channels": 1, "size": [h, w], "scale": 1 / 255}
    model_json = {
        "name": "linear",
        "family": "cnn",
        "framework": "torch",
        "input_kind": "image",
        "args": {},
        "num_classes": len(labels),
        "dataset": {"path": "nowhere", "manifest_sha256": "0" * 64, "classes": labels},
    }
    return save_bundle(
        out,
        linear_onnx(h, len(labels)),
        labels,
        {"recipe": recipe, "input": spec},
        {"test": {"accuracy": 0.1, "n": 1}},
        model_json,
    )


@pytest.fixture(scope="session")
def sketch_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with the ``sketch`` recipe and three doodle labels."""
    return make_bundle(
        tmp_path_factory.mktemp("bundles") / "sketch", "sketch", ["cat", "dog", "sun"]
    )


@pytest.fixture(scope="session")
def mnist_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with the ``mnist`` recipe and the ten digits."""
    return make_bundle(tmp_path_factory.mktemp("bundles") / "mnist", "mnist", DIGITS)


@pytest.fixture
def store(tmp_path: Path):
    s = FeedbackStore.from_path_or_url(tmp_path / "fb.sqlite3")
    yield s
    s.close()
