"""Configuration, the trainer, and `imgclass train` end to end on real built-in data."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch
import yaml

from imgclass.bundle import load_bundle
from imgclass.cli import main
from imgclass.errors import ConfigError, ModelError
from imgclass.models import create_model
from imgclass.train.augment import random_affine
from imgclass.train.config import resolve_config
from imgclass.train.trainer import Trainer


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "digits"
    assert (
        main(
            ["-q", "data", "prepare", "--builtin", "digits", "--per-class", "60", "--out", str(out)]
        )
        == 0
    )
    return out


def test_config_layers_and_errors(tmp_path):
    cfg = resolve_config("cnn-resnet")
    assert cfg.schedule == "onecycle" and cfg.augment == "affine"  # the family's defaults
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump({"lr": 0.01, "epochs": 4, "model_args": {"width": 16}}))
    cfg = resolve_config(
        "cnn-resnet", str(file), ["lr=3e-4", "model.dropout=0.2", "schedule=cosine"]
    )
    assert (cfg.lr, cfg.epochs, cfg.schedule) == (3e-4, 4, "cosine")
    assert cfg.model_args == {"width": 16, "dropout": 0.2}
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['colour'\].*valid: .*lr"):
        resolve_config("cnn-resnet", sets=["colour=red"])
    with pytest.raises(ConfigError, match="schedule must be one of"):
        resolve_config("cnn-resnet", sets=["schedule=sometimes"])


def test_affine_augmentation_is_seeded_and_identity_at_zero():
    x = torch.rand(4, 1, 28, 28)
    same = random_affine(
        x, torch.Generator().manual_seed(0), rotation=0, scale=(1, 1), shear=0, shift=0
    )
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    a = random_affine(x, torch.Generator().manual_seed(1))
    b = random_affine(x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, x)


def _tiny(shared_data):
    m = np.load(shared_data / "mnist.npz")
    return m["x_train"][:256], m["y_train"][:256], m["x_test"][:128], m["y_test"][:128]


def test_same_seed_same_weights_and_resume_equals_uninterrupted(tmp_path, shared_data):
    torch.set_num_threads(1)
    x, y, xv, yv = _tiny(shared_data)
    cfg = resolve_config("cnn-small", epochs=3, seed=5)

    def run(checkpoints=None, stop_after=None, resume=False):
        torch.manual_seed(0)
        model = create_model("cnn-small", 10)

        def stop(epoch, row):
            if stop_after and epoch == stop_after:
                raise KeyboardInterrupt

        trainer = Trainer(model, cfg, checkpoints, on_epoch=stop)
        with contextlib.suppress(KeyboardInterrupt):
            trainer.fit(x, y, xv, yv, resume=resume)
        return model

    a, b = run(), run()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)
    run(tmp_path / "ck", stop_after=1)  # killed after epoch 1
    resumed = run(tmp_path / "ck", resume=True)
    for pa, pb in zip(a.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)


def test_early_stopping_restores_the_best_weights(shared_data):
    x, y, xv, yv = _tiny(shared_data)
    cfg = resolve_config("cnn-small", epochs=6, sets=["patience=1", "lr=0.3", "optimizer=sgd"])
    model = create_model("cnn-small", 10)
    result = Trainer(model, cfg).fit(x, y, xv, yv)
    best = max(h["val_accuracy"] for h in result.history)
    assert result.history[result.best_epoch - 1]["val_accuracy"] == best
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(xv[:, None] / 255.0).float()).argmax(1).numpy() == yv).mean()
    assert acc == pytest.approx(best)


@pytest.mark.parametrize("model", ["cnn-small", "pca-svm"])
def test_train_writes_a_complete_verified_bundle(tmp_path, digits_dir, model, capsys):
    out = tmp_path / "run"
    sets = ["n_components=20"] if model == "pca-svm" else []
    args = [
        "-q",
        "train",
        "--data",
        str(digits_dir),
        "--model",
        model,
        "--out",
        str(out),
        "--epochs",
        "2",
        "--json",
    ]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    result = json.loads(capsys.readouterr().out)
    bundle = load_bundle(out / "bundle")
    assert bundle.labels == [str(d) for d in range(10)]
    assert bundle.model_json["dataset"]["manifest_sha256"]
    assert (out / "bundle" / "card.md").read_text().startswith(f"# Model card: {model}")
    # Evaluating the bundle gives the accuracy measured at the end of training.
    assert main(["evaluate", str(out / "bundle"), "--data", str(digits_dir), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == pytest.approx(result["test"]["accuracy"])
    assert evaluated["n"] == 500 and evaluated["accuracy"] > 0.6
    (out / "bundle" / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ModelError, match="does not match the sha256"):
        load_bundle(out / "bundle")


def test_stroke_rnn_trains_on_strokes_and_evaluates_through_its_bundle(tmp_path, capsys):
    data = tmp_path / "strokes"
    assert (
        main(
            [
                "-q",
                "data",
                "prepare",
                "--builtin",
                "doodle-strokes",
                "--categories",
                "sun,cup,star",
                "--out",
                str(data),
            ]
        )
        == 0
    )
    capsys.readouterr()
    out = tmp_path / "rnn"
    args = [
        "-q",
        "train",
        "--data",
        str(data),
        "--model",
        "stroke-rnn",
        "--out",
        str(out),
        "--epochs",
        "2",
        "--set",
        "hidden=32",
        "--set",
        "max_len=80",
        "--json",
    ]
    assert main(args) == 0
    trained = json.loads(capsys.readouterr().out)
    bundle = load_bundle(out / "bundle")
    assert bundle.preprocess["input"] == {
        "kind": "sequence",
        "format": "stroke5",
        "max_len": 80,
        "size": [28, 28],
    }
    assert main(["evaluate", str(out / "bundle"), "--data", str(data), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == pytest.approx(trained["test"]["accuracy"])
    with pytest.raises(ConfigError, match="needs strokes"):
        from imgclass.train.config import resolve_config
        from imgclass.train.run import train

        bitmaps = tmp_path / "bitmaps"
        assert (
            main(
                [
                    "-q",
                    "data",
                    "prepare",
                    "--builtin",
                    "doodles",
                    "--per-class",
                    "5",
                    "--out",
                    str(bitmaps),
                ]
            )
            == 0
        )
        train(bitmaps, tmp_path / "x", resolve_config("stroke-rnn", epochs=1))


def test_predict_takes_images_of_any_size_and_polarity_and_ndjson(
    tmp_path, digits_dir, shared_data, capsys
):
    from PIL import Image

    out = tmp_path / "run"
    assert (
        main(
            [
                "-q",
                "train",
                "--data",
                str(digits_dir),
                "--model",
                "cnn-small",
                "--out",
                str(out),
                "--epochs",
                "3",
            ]
        )
        == 0
    )
    m = np.load(shared_data / "mnist.npz")
    digit, label = m["x_test"][7], int(m["y_test"][7])
    big = Image.fromarray(255 - digit).resize((280, 280))  # black on white, 10x larger
    big.save(tmp_path / "digit.png")
    Image.fromarray(digit).save(tmp_path / "small.jpg", quality=95)
    (tmp_path / "broken.png").write_bytes(b"nope")
    capsys.readouterr()
    rc = main(
        [
            "predict",
            str(out / "bundle"),
            str(tmp_path / "digit.png"),
            str(tmp_path / "small.jpg"),
            str(tmp_path / "broken.png"),
            "--json",
            "--top-k",
            "2",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 1 and "broken.png: cannot read the image" in captured.err
    results = json.loads(captured.out)["results"]
    assert [len(r["predictions"]) for r in results] == [2, 2]
    assert (
        results[0]["predictions"][0]["label"] == results[1]["predictions"][0]["label"] == str(label)
    )
