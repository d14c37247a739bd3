"""One contract over every registered model: build, forward, export, ONNX parity, learning."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from imgclass.errors import ConfigError
from imgclass.export import export_sklearn, export_torch, export_torch_sequence
from imgclass.models import create_model, list_models, model_info

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits(shared_data):
    m = np.load(shared_data / "mnist.npz")
    return m["x_train"][:400].astype(np.float32) / 255.0, m["y_train"][:400].astype(np.int64)


def test_registry_lists_the_families():
    assert {"cnn-small", "cnn-3conv", "cnn-resnet", "pca-svm"} <= set(list_models())
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        create_model("nope", 3)


@pytest.mark.parametrize(("classes", "count"), [(20, 50_836), (10, 34_826)])
def test_cnn_small_has_the_pictionary_parameter_count(classes, count):
    assert sum(p.numel() for p in create_model("cnn-small", classes).parameters()) == count


def test_cnn_3conv_and_resnet_sizes():
    assert sum(p.numel() for p in create_model("cnn-3conv", 20).parameters()) == 99_732
    resnet = sum(p.numel() for p in create_model("cnn-resnet", 20).parameters())
    assert 250_000 < resnet < 350_000


IMAGE_MODELS = [
    n
    for n in list_models()
    if model_info(n).framework == "torch" and model_info(n).input_kind == "image"
]


@pytest.mark.parametrize("name", IMAGE_MODELS)
@pytest.mark.parametrize("classes", [3, 20])
def test_torch_models_forward_export_and_match_onnx(name, classes):
    torch.manual_seed(0)
    model = create_model(name, classes).eval()
    x = torch.rand(7, 1, 28, 28)
    with torch.no_grad():
        expected = torch.softmax(model(x), dim=1).numpy()
    assert expected.shape == (7, classes)
    session = ort.InferenceSession(export_torch(model, x[:1].numpy()))
    for batch in (1, 7):
        got = session.run(["probabilities"], {"input": x[:batch].numpy()})[0]
        np.testing.assert_allclose(got, expected[:batch], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_torch_models_learn_a_tiny_batch(name, digits):
    torch.manual_seed(0)
    x, y = digits
    xb, yb = torch.from_numpy(x[:64, None]), torch.from_numpy(y[:64])
    model = create_model(name, 10)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    again = create_model(name, 10)
    again.load_state_dict(state)
    model.eval()
    again.eval()
    torch.testing.assert_close(model(xb[:4]), again(xb[:4]))


def test_pca_svm_probabilities_and_onnx_parity(digits):
    x, y = digits
    flat = x.reshape(len(x), -1)
    model = create_model("pca-svm", 10, n_components=30).fit(flat[:300], y[:300])
    proba = model.predict_proba(flat[300:])
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    assert (proba.argmax(axis=1) == y[300:]).mean() > 0.8
    session = ort.InferenceSession(export_sklearn(model, 784))
    for batch in (1, 7):
        got = session.run(["probabilities"], {"input": flat[300 : 300 + batch]})[0]
        np.testing.assert_allclose(got, proba[:batch], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_stroke_rnn_ignores_padding_and_matches_onnx(cell):
    torch.manual_seed(0)
    model = create_model("stroke-rnn", 4, cell=cell, hidden=32).eval()
    x = torch.randn(5, 30, 5)
    lengths = torch.tensor([30, 3, 17, 1, 22])
    longer = torch.cat([x, torch.randn(5, 11, 5)], dim=1)  # more padding, of garbage
    with torch.no_grad():
        a = torch.softmax(model(x, lengths), dim=1).numpy()
        b = torch.softmax(model(longer, lengths), dim=1).numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)
    session = ort.InferenceSession(export_torch_sequence(model, x.numpy(), lengths.numpy()))
    for batch, steps in ((1, 30), (5, 30), (5, 41)):
        feed = {
            "input": (longer if steps == 41 else x)[:batch].numpy(),
            "lengths": lengths[:batch].numpy(),
        }
        got = session.run(["probabilities"], feed)[0]
        np.testing.assert_allclose(got, a[:batch], rtol=1e-4, atol=1e-5)


def test_stroke_rnn_learns_a_tiny_batch():
    torch.manual_seed(0)
    x = torch.randn(32, 12, 5)
    y = (x[:, :, 0].sum(dim=1) > 0).long()
    lengths = torch.full((32,), 12)
    model = create_model("stroke-rnn", 2, hidden=32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x, lengths), y)
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
