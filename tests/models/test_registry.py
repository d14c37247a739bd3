"""The registry and the CNN families' published sizes."""

from __future__ import annotations

import pytest
import torch

from imgclass.errors import ConfigError
from imgclass.models import create_model, list_models, model_info, register_model
from imgclass.models.registry import _REGISTRY, list_patterns, model_args


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("classes", "count"), [(20, 50_836), (10, 34_826)])
def test_cnn_small_has_the_pictionary_parameter_count(classes, count):
    # The Pictionary project's layer table: 320 + 18,496 + 32,020 for 20 classes.
    assert n_params(create_model("cnn-small", classes)) == count


def test_cnn_3conv_parameter_count():
    # Hand count on 28x28: convs 160 + 4,640 + 18,496; 28 -> 14 -> 7 -> 3 after three pools;
    # dense 64*3*3*128 + 128 = 73,856; output 128*20 + 20 = 2,580.
    assert n_params(create_model("cnn-3conv", 20)) == 160 + 4_640 + 18_496 + 73_856 + 2_580


def test_cnn_resnet_is_a_small_resnet_of_about_0_3m_parameters():
    model = create_model("cnn-resnet", 20)
    assert 250_000 < n_params(model) < 350_000
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert {32, 64, 128} <= set(widths)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    wider = create_model("cnn-resnet", 20, width=48, depth=2)
    assert n_params(wider) > 2 * n_params(model)


def test_unknown_names_and_too_few_classes_are_config_errors():
    with pytest.raises(ConfigError, match=r"unknown model 'nope'.*cnn-small"):
        create_model("nope", 3)
    with pytest.raises(ConfigError, match="unknown model"):
        model_info("transfer-timm:")  # a pattern needs a backbone name
    with pytest.raises(ConfigError, match="at least 2 classes"):
        create_model("cnn-small", 1)


def test_training_keys_are_ignored_by_the_factory():
    model = create_model("cnn-small", 5, epochs=3, lr=0.1, dropout=0.25)
    assert model.head[1].p == 0.25
    assert model_args("cnn-small", {"epochs": 3, "dropout": 0.25}) == {"dropout": 0.25}


def test_patterns_resolve_to_a_backbone_argument():
    info = model_info("transfer-timm:resnet18")
    assert info.name == "transfer-timm:resnet18"
    assert info.family == "transfer" and info.requires == ("timm",)
    assert info.constructor.keywords == {"backbone": "resnet18"}
    assert "transfer-timm:resnet18" not in list_models()
    assert "transfer-timm:<name>" in list_patterns(available_only=False)
    assert ("transfer-timm:<name>" in list_patterns()) == info.available


def test_register_model_rejects_bad_kinds_and_adds_training_defaults():
    with pytest.raises(ValueError, match="input_kind"):
        register_model("x", family="x", input_kind="video")
    try:

        @register_model("test-tiny", family="test", default_cfg={"epochs": 2})
        def tiny(num_classes: int, width: int = 4) -> torch.nn.Module:
            """A tiny test model."""
            return torch.nn.Linear(width, num_classes)

        info = model_info("test-tiny")
        assert info.default_cfg["epochs"] == 2 and info.default_cfg["batch_size"] == 64
        assert info.doc == "A tiny test model."
        assert create_model("test-tiny", 3, width=6).weight.shape == (3, 6)
    finally:
        _REGISTRY.pop("test-tiny", None)


def test_cnn_fast_is_the_cheap_default_for_bitmaps():
    from imgclass.train.config import resolve_config

    assert resolve_config().model == "cnn-fast"
    model = create_model("cnn-fast", 20)
    assert 20_000 < n_params(model) < 100_000
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].stride == (2, 2)  # the stem halves 28x28 at once
    assert any(c.groups == c.in_channels > 1 for c in convs)  # depthwise convolutions
    assert convs[1].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(5, 1, 28, 28)
    model.eval()
    assert model(x).shape == (5, 20)
    assert create_model("cnn-fast", 3, in_channels=3)(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    plain = create_model("cnn-fast", 20, separable=False, channels_last=False)
    assert not any(c.groups > 1 for c in plain.modules() if isinstance(c, torch.nn.Conv2d))
    assert plain(x).shape == (5, 20)


def test_cnn_fast_depths_must_be_three_positive_counts():
    with pytest.raises(ConfigError, match=r"depths must be three block counts"):
        create_model("cnn-fast", 20, depths=[1, 2])
    with pytest.raises(ConfigError, match=r"depths must be three block counts"):
        create_model("cnn-fast", 20, depths=[1, 0, 2])


def test_cnn_resnet_stride_2_stem_halves_the_first_stage():
    model = create_model("cnn-resnet", 10, stem_stride=2)
    assert model.stem[0].stride == (2, 2)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
