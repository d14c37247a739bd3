"""Training configuration: the layers (family defaults, YAML file, --set, flags), typing
of values, and errors that name the key at fault."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from imgclass.errors import ConfigError
from imgclass.models import model_info
from imgclass.train.config import (
    AUGMENT_PRESETS,
    TrainConfig,
    parse_value,
    resolve_config,
    save_config,
)


def test_family_defaults_come_first():
    info = model_info("cnn-resnet")
    cfg = resolve_config("cnn-resnet")
    for key in ("epochs", "batch_size", "lr", "optimizer", "schedule", "weight_decay"):
        assert getattr(cfg, key) == info.default_cfg[key], key
    preset = info.default_cfg["augment"]
    assert cfg.augment.preset == preset
    for key, value in AUGMENT_PRESETS[preset].items():
        assert getattr(cfg.augment, key) == value
    assert cfg.augment.hflip == 0  # never on by default: not label-safe for every category


def test_file_then_sets_then_flags(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text(
        yaml.safe_dump(
            {
                "lr": 0.01,
                "epochs": 4,
                "model_args": {"width": 16},
                "augment": {"preset": "affine", "rotation": 5},
            }
        )
    )
    cfg = resolve_config(
        "cnn-resnet",
        file,
        ["lr=3e-4", "model.dropout=0.2", "augment.shift=1", "schedule=cosine", "epochs=6"],
        epochs=9,
    )
    assert (cfg.lr, cfg.epochs, cfg.schedule) == (3e-4, 9, "cosine")
    assert cfg.model_args == {"width": 16, "dropout": 0.2}
    assert (cfg.augment.rotation, cfg.augment.shift) == (5.0, 1.0)
    assert cfg.augment.scale == AUGMENT_PRESETS["affine"]["scale"]  # kept from the preset


def test_model_named_in_the_file_or_by_set_and_bare_model_arguments(tmp_path):
    file = tmp_path / "m.yaml"
    file.write_text("model: {name: cnn-small, dropout: 0.25}\nbatch_size: 16\n")
    cfg = resolve_config(file=file)
    assert (cfg.model, cfg.model_args, cfg.batch_size) == ("cnn-small", {"dropout": 0.25}, 16)
    assert resolve_config(sets=["model=pca-svm", "n_components=30"]).model_args == {
        "n_components": 30
    }
    assert resolve_config(fallback_model="cnn-3conv").model == "cnn-3conv"
    assert resolve_config("cnn-small", file).model == "cnn-small"  # --model wins


def test_a_preset_resets_earlier_augmentation_values():
    cfg = resolve_config("cnn-small", sets=["augment.rotation=30", "augment=photo"])
    assert cfg.augment.rotation == 0 and cfg.augment.hflip == AUGMENT_PRESETS["photo"]["hflip"]
    assert cfg.augment.image_active and not cfg.augment.sequence_active
    assert not resolve_config("cnn-small", sets=["augment=none"]).augment.image_active


def test_set_values_are_yaml():
    assert parse_value("3e-4") == pytest.approx(0.0003)  # YAML 1.1 would leave a string
    assert parse_value("10") == 10 and isinstance(parse_value("10"), int)
    assert parse_value("true") is True
    assert parse_value("cosine") == "cosine"
    assert parse_value("[1, 2.5]") == [1, 2.5]
    assert parse_value("scale") == "scale"


def test_saved_config_reads_back_identically(tmp_path):
    cfg = resolve_config("cnn-resnet", sets=["augment.elastic_alpha=1.5", "width=24", "seed=3"])
    save_config(cfg, tmp_path / "config.yaml")
    again = resolve_config(file=tmp_path / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["augment"]["elastic_alpha"] == 1.5


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["colour=red"], r"--set colour: unknown setting 'colour' for cnn-resnet; valid .*lr"),
        (["augment.blur=2"], r"unknown augmentation setting 'blur'; valid: .*rotation"),
        (["model.depthh=2"], r"cnn-resnet has no argument 'depthh'; its arguments: .*depth"),
        (["schedule=sometimes"], r"schedule must be one of cosine, onecycle, plateau, none"),
        (["epochs=many"], r"epochs must be a int, got 'many'"),
        (["epochs=2.5"], r"epochs must be a int"),
        (["restore_best=maybe"], r"restore_best must be a bool"),
        (["augment.hflip=1.5"], r"augment.hflip is a probability"),
        (["augment=blurry"], r"augment preset must be one of"),
        (["schedule=plateau", "warmup=1"], r"warmup does not apply to plateau"),
        (["lr"], r"--set 'lr': expected key=value"),
        (["label_smoothing=1"], r"label_smoothing must be in \[0, 1\)"),
    ],
)
def test_errors_name_the_setting(sets, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("cnn-resnet", sets=sets)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [unclosed\n")
    with pytest.raises(ConfigError, match=r"--config .*bad.yaml: not valid YAML"):
        resolve_config("cnn-small", bad)
    bad.write_text("- lr\n- epochs\n")
    with pytest.raises(ConfigError, match="expected a mapping of settings"):
        resolve_config("cnn-small", bad)
    bad.write_text("lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"--config .*bad.yaml: unknown setting 'lrr'"):
        resolve_config("cnn-small", bad)
    with pytest.raises(ConfigError, match="cannot read it"):
        resolve_config("cnn-small", tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown model 'cnn-huge'"):
        resolve_config("cnn-huge")


def test_every_registered_default_is_a_valid_setting():
    """Each family's defaults resolve, and the keys they use are TrainConfig fields or
    constructor arguments."""
    from imgclass.models import list_models

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in list_models():
        cfg = resolve_config(name)
        assert cfg.model == name
        assert set(cfg.model_args) <= set(model_info(name).default_cfg) - fields
