"""What ``GET /v1/models`` tells the web page besides the model: whether it reads drawings
or photos (from the bundle's recipe), when and on what it was trained (a version people
can read instead of a hash), whether admin actions are on, and when to hedge a guess."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from imgclass.bundle import save_bundle
from imgclass.data.preprocess import get_recipe
from imgclass.serve.app import create_app
from imgclass.serve.settings import ServeSettings
from onnx_support import linear_onnx


@pytest.fixture(scope="module")
def photo_bundle(tmp_path_factory):
    """A servable photo bundle: the photo recipe at 32 px, RGB."""
    recipe = get_recipe("photo", size=32)
    spec = {"kind": "image", "layout": "nchw", "channels": 3, "size": [32, 32], "scale": 1 / 255}
    model_json = {
        "name": "linear",
        "family": "transfer",
        "framework": "torch",
        "input_kind": "image",
        "dataset": {"path": "/data/prepared/cats-dogs", "manifest_sha256": "0" * 64},
    }
    return save_bundle(
        tmp_path_factory.mktemp("photo") / "bundle",
        linear_onnx(32, 2, channels=3),
        ["cat", "dog"],
        {"recipe": recipe, "input": spec},
        {"test": {"accuracy": 0.5, "n": 2}},
        model_json,
    )


def models(bundles, tmp_path, **settings):
    app = create_app(
        ServeSettings(
            models=[str(b) for b in bundles], feedback_db=tmp_path / "fb.sqlite3", **settings
        )
    )
    with TestClient(app) as client:
        return client.get("/v1/models").json()


def test_each_model_says_what_it_reads_and_when_it_was_trained(
    photo_bundle, digits_bundle, tmp_path
):
    answer = models([photo_bundle, digits_bundle], tmp_path)
    photo, digits = answer["models"]
    assert photo["reads"] == "photos" and digits["reads"] == "drawings"
    assert photo["trained_on"] == "cats-dogs" and digits["trained_on"] == "digits"
    for m in (photo, digits):
        assert len(m["trained"]) == 10 and m["trained"].startswith("20"), m["trained"]
    assert answer["admin"] is False and answer["hedge_below"] == 0.5


def test_admin_and_the_hedge_come_from_the_settings(digits_bundle, tmp_path):
    answer = models([digits_bundle], tmp_path, admin_token="t", hedge_below=0.3)
    assert answer["admin"] is True and answer["hedge_below"] == 0.3
