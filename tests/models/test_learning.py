"""The families learn real data, and their bundles give the accuracy measured in training.

Small on purpose (2,000 MNIST digits, seconds on one core); the full-size goals are
in bench/.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imgclass.bundle import load_bundle, save_bundle
from imgclass.models import create_model
from imgclass.onnx_export import export_onnx

torch.set_num_threads(1)
LABELS = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def mnist(shared_data):
    m = np.load(shared_data / "mnist.npz")
    return (
        m["x_train"][:2000],
        m["y_train"][:2000].astype(np.int64),
        m["x_test"][:1000],
        m["y_test"][:1000],
    )


def bundle_of(tmp_path, model, sample, layout: str):
    from imgclass.data.preprocess import get_recipe

    spec = {"kind": "image", "layout": layout, "channels": 1, "size": [28, 28], "scale": 1 / 255}
    preprocess = {"recipe": get_recipe("mnist"), "input": spec}
    path = save_bundle(tmp_path / "bundle", export_onnx(model, sample), LABELS, preprocess, {}, {})
    return load_bundle(path)


def test_cnn_small_learns_digits_and_its_bundle_agrees(tmp_path, mnist):
    x, y, x_test, y_test = mnist
    torch.manual_seed(0)
    model = create_model("cnn-small", 10)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    images = torch.from_numpy(x[:, None] / np.float32(255))
    labels = torch.from_numpy(y)
    for _ in range(2):
        for batch in torch.randperm(len(y)).split(16):
            loss = torch.nn.functional.cross_entropy(model(images[batch]), labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        trained = model(torch.from_numpy(x_test[:, None] / np.float32(255))).argmax(1).numpy()
    accuracy = (trained == y_test).mean()
    assert accuracy > 0.90  # 0.93 measured

    bundle = bundle_of(tmp_path, model, images[:1].numpy(), "nchw")
    served = bundle.predict_proba(x_test).argmax(axis=1)
    assert (served == y_test).mean() == accuracy

    # User images: 100x100, black ink on white; the bundle's recipe brings them back.
    from PIL import Image

    raw = [255 - np.asarray(Image.fromarray(d).resize((100, 100))) for d in x_test[:300]]
    from_raw = bundle.predict_raw(raw).argmax(axis=1)
    assert (from_raw == y_test[:300]).mean() > accuracy - 0.05


def test_pca_svm_learns_digits_and_its_bundle_agrees(tmp_path, mnist):
    x, y, x_test, y_test = mnist
    model = create_model("pca-svm", 10, n_components=40)
    model.fit(x.reshape(len(x), -1).astype(np.float32) / 255, y)
    flat = x_test.reshape(len(x_test), -1).astype(np.float32) / 255
    expected = model.predict_proba(flat)
    assert (expected.argmax(axis=1) == y_test).mean() > 0.90  # 0.94 measured
    bundle = bundle_of(tmp_path, model, flat[:1], "flat")
    np.testing.assert_allclose(bundle.predict_proba(x_test), expected, rtol=1e-4, atol=1e-5)
