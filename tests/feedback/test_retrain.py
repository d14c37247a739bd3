"""Retraining: fine-tuning a real champion on real feedback (new labels, replay, freezing),
refitting scikit-learn models, and `imgclass retrain` against a real MLflow registry and
feedback store, including a retrain killed half-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from retrain_support import add_feedback, held_out_digits, prepare_digits, train_champion

from imgclass.bundle import load_bundle, load_torch_model, read_weights
from imgclass.cli import main
from imgclass.errors import ModelError
from imgclass.feedback.dataset_export import export_feedback
from imgclass.feedback.retrain import (
    FineTuneConfig,
    extend_head,
    fine_tune,
    replay_count,
    replay_indices,
)
from imgclass.feedback.store import FeedbackStore
from imgclass.models import create_model
from imgclass.onnx_export import graph_temperature
from mlflow_support import fresh_store

OLD = "0,1,2,3,4,5,6,7"  # the champion knows these; 8 and 9 come from feedback


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A cnn-small champion on digits 0-7 and a feedback export of held-out digits 0-9."""
    root = tmp_path_factory.mktemp("retrain")
    data = prepare_digits(root / "digits", OLD)
    champion = train_champion(data, root / "champion")
    images, labels = held_out_digits(160)
    add_feedback(root / "fb.sqlite3", images, labels)
    with FeedbackStore.from_path_or_url(root / "fb.sqlite3") as store:
        feedback = export_feedback(store, root / "feedback", bundle=champion)
    return {"root": root, "data": data, "champion": champion, "feedback": feedback}


def test_replay_follows_the_ratio_with_a_floor_and_keeps_the_class_shares():
    assert replay_count(100, 5000, 1.0, 50) == 100
    assert replay_count(100, 5000, 2.5, 50) == 250
    assert replay_count(10, 5000, 1.0, 50) == 50  # the floor
    assert replay_count(100, 80, 1.0, 50) == 80  # no more than there is
    assert replay_count(100, 5000, 0.0, 50) == 0  # no replay at all
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    picked = replay_indices(labels, 200, seed=1)
    assert len(picked) == 200 and len(set(picked.tolist())) == 200
    assert np.bincount(labels[picked]).tolist() == [120, 60, 20]
    assert not np.array_equal(picked, replay_indices(labels, 200, seed=2))
    assert np.array_equal(picked, replay_indices(labels, 200, seed=1))
    assert len(replay_indices(labels, 5000)) == 1000


def test_extending_the_head_keeps_the_old_scores():
    torch.manual_seed(0)
    model = create_model("cnn-small", 8).eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        before = model(x)
    assert extend_head(model, 10) == 2
    with torch.no_grad():
        after = model(x)
    assert after.shape == (5, 10)
    torch.testing.assert_close(after[:, :8], before)
    assert extend_head(model, 10) == 0
    with pytest.raises(ModelError, match="cannot shrink"):
        extend_head(model, 4)


def test_fine_tune_learns_new_labels_and_still_predicts_the_old(world, tmp_path):
    result = fine_tune(
        world["champion"],
        world["feedback"],
        world["data"],
        tmp_path,
        FineTuneConfig(epochs=4, lr=2e-3, min_replay=100, num_threads=1),
    )
    assert result.method == "fine-tune" and sorted(result.new_labels) == ["8", "9"]
    bundle = load_bundle(result.bundle)
    assert bundle.labels[:8] == OLD.split(",") and len(bundle.labels) == 10
    model, desc = load_torch_model(result.bundle)  # weights.npz of the grown model
    assert desc.model_json["num_classes"] == 10
    assert desc.model_json["retrained_from"]["feedback_examples"] == result.n_feedback
    assert abs(result.n_replay - max(100, result.n_feedback)) <= 8  # rounded per class
    # calibrated like a trained bundle, on the original valid split (issue 12)
    calibration = desc.model_json["calibration"]
    assert calibration["fitted_on"] == "valid (original dataset)" and calibration["n"] > 0
    graph = (result.bundle / "model.onnx").read_bytes()
    assert graph_temperature(graph) == pytest.approx(calibration["temperature"], rel=1e-6)
    from imgclass.data.store import PreparedDataset

    with PreparedDataset.open(world["data"]) as orig, PreparedDataset.open(world["feedback"]) as fb:
        predicted = bundle.predict_proba(orig.load("test")[0]).argmax(1)
        truth = orig.labels("test")
        assert (predicted == truth).mean() > 0.5  # old classes are still known
        assert set(predicted.tolist()) >= set(range(8))
        images, codes = fb.load("train")
        new = np.isin(np.asarray(fb.classes)[codes], ["8", "9"])
        got = np.asarray(bundle.labels)[bundle.predict_proba(images[new]).argmax(1)]
        assert (got == np.asarray(fb.classes)[codes[new]]).mean() > 0.3  # the new ones learnt


def test_freezing_trains_the_head_only(world, tmp_path):
    result = fine_tune(
        world["champion"],
        world["feedback"],
        world["data"],
        tmp_path,
        FineTuneConfig(epochs=1, freeze_features=True, num_threads=1),
    )
    before, after = read_weights(world["champion"]), read_weights(result.bundle)
    conv = [k for k in before if k.startswith("features.")]
    assert conv and all(np.array_equal(before[k], after[k]) for k in conv)
    assert result.frozen_parameters == sum(before[k].size for k in conv)
    assert not np.array_equal(before["head.2.weight"], after["head.2.weight"][:8])


def test_pca_svm_is_refitted_and_old_torch_bundles_are_refused(world, tmp_path):
    svm = train_champion(world["data"], tmp_path / "svm", model="pca-svm")
    result = fine_tune(svm, world["feedback"], world["data"], tmp_path / "refit")
    assert result.method == "refit" and len(load_bundle(result.bundle).labels) == 10
    assert load_bundle(result.bundle).model_json["calibration"]["method"] == "temperature"
    # the feedback export was made for the cnn's labels; they are the same here
    old = tmp_path / "old"
    old.mkdir()
    for f in world["champion"].iterdir():
        if f.name != "weights.npz":
            (old / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ModelError, match="retrain it with this version"):
        fine_tune(old, world["feedback"], world["data"], tmp_path / "x")


# --- the command, against a real registry --------------------------------------------


@pytest.fixture
def registry_world(world, tmp_path, monkeypatch):
    """A fresh tracking store with the champion registered as digits@champion, and a
    feedback store of accepted corrections that teach 8 and 9."""
    from imgclass.experiments.model_registry import ModelRegistry

    monkeypatch.chdir(tmp_path)  # the registry cache goes to tmp_path/work
    uri = fresh_store(tmp_path / "mlflow.db")
    registry = ModelRegistry(uri)
    registry.register(world["champion"], "digits", alias="champion")
    images, labels = held_out_digits(120, classes=(8, 9))
    db = tmp_path / "feedback.sqlite3"
    add_feedback(db, images, labels)
    return {"uri": uri, "db": db, "registry": registry, "data": world["data"]}


def retrain_args(w: dict, out: Path, *extra: str) -> list[str]:
    return [
        "retrain",
        "--registry",
        "digits",
        "--tracking-uri",
        w["uri"],
        "--feedback-db",
        str(w["db"]),
        "--out",
        str(out),
        *extra,
    ]


def store_rows(db: Path) -> list[dict]:
    with FeedbackStore.from_path_or_url(db) as store:
        return store.list(limit=1000)


def test_cli_retrains_registers_and_promotes(registry_world, tmp_path, capsys):
    w = registry_world
    before = store_rows(w["db"])
    args = retrain_args(w, tmp_path / "run", "--epochs", "4", "--lr", "2e-3", "--tolerance", "5")
    assert main(["-q", *args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    c = out["comparison"]
    assert c["champion"]["feedback_test"]["accuracy"] == 0.0  # it cannot name 8 or 9
    assert c["challenger"]["feedback_test"]["accuracy"] > 0.0
    assert out["promoted"] is c["decision"]["promote"]
    assert out["promoted"], out["reasons"]
    registry = w["registry"]
    assert registry.get("digits", "champion").version == out["challenger_version"] == 2
    assert registry.rollback("digits").version == 1  # the old champion is remembered
    for name in ("comparison.json", "comparison.md", "per_class_changes.png"):
        assert (Path(out["report_dir"]) / name).stat().st_size > 0
    assert store_rows(w["db"]) == before  # the store is only read
    from mlflow.tracking import MlflowClient

    run = MlflowClient(w["uri"]).get_run(out["mlflow_run_id"])
    assert run.data.tags["imgclass.decision"] == "promote"
    assert run.data.metrics["challenger_feedback_test_accuracy"] > 0
    assert run.data.params["finetune.epochs"] == "4"


def test_cli_no_promote_keeps_a_challenger_and_prints_for_people(registry_world, tmp_path, capsys):
    w = registry_world
    args = retrain_args(w, tmp_path / "run", "--epochs", "1", "--no-promote")
    assert main(["-q", *args]) == 0
    text = capsys.readouterr().out
    assert "not promoted: version 2 stays a challenger" in text and "original test" in text
    registry = w["registry"]
    assert registry.get("digits", "champion").version == 1
    assert registry.get("digits", "challenger").version == 2


def test_a_killed_retrain_changes_nothing_and_the_next_one_works(registry_world, tmp_path):
    w = registry_world
    before = store_rows(w["db"])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "imgclass", *retrain_args(w, tmp_path / "run")]
    proc = subprocess.Popen(
        [*command, "--epochs", "5000"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    seen = []
    deadline = time.monotonic() + 240
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if "epoch 1/5000" in line or time.monotonic() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)  # mid-training
    proc.wait(timeout=30)
    assert any("epoch 1/5000" in line for line in seen), "".join(seen[-20:])
    registry = w["registry"]
    assert [v.version for v in registry.versions("digits")] == [1]
    assert registry.get("digits", "champion").version == 1
    assert store_rows(w["db"]) == before
    done = subprocess.run(
        [*command, "--epochs", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert [v.version for v in registry.versions("digits")] == [2, 1]
    assert store_rows(w["db"]) == before


def test_a_stroke_model_fine_tunes_on_stroke_feedback(tmp_path):
    """Sequence champions replay the original strokes and learn from submitted ones."""
    from imgclass.data.store import PreparedDataset

    data = tmp_path / "d"
    args = ["-q", "data", "prepare", "--builtin", "doodle-strokes", "--per-class", "10"]
    assert main([*args, "--out", str(data)]) == 0
    sets = ["--set", "hidden=8", "--set", "max_len=48", "--set", "num_threads=1"]
    args = ["-q", "train", "--data", str(data), "--model", "stroke-rnn", "--epochs", "1"]
    assert main([*args, "--out", str(tmp_path / "c"), *sets, "--no-track"]) == 0
    with PreparedDataset.open(data) as ds, FeedbackStore.from_path_or_url(tmp_path / "f") as s:
        ids = []
        for i in range(24):
            k = i % ds.size("test")
            drawing = [[a[:, 0].tolist(), a[:, 1].tolist()] for a in ds.strokes("test", k)]
            label = ds.classes[ds.labels("test")[k]] if i < 18 else "squiggle"
            ids.append(s.add(label=label, input_kind="strokes", strokes=drawing)[0])
        s.set_status(ids, "accepted")
        feedback = export_feedback(s, tmp_path / "fb", bundle=tmp_path / "c" / "bundle")
    result = fine_tune(
        tmp_path / "c" / "bundle",
        feedback,
        data,
        tmp_path / "ch",
        FineTuneConfig(epochs=1, min_replay=20, num_threads=1),
    )
    assert result.new_labels == ["squiggle"] and result.n_replay >= 19
    bundle = load_bundle(result.bundle)
    assert bundle.input_kind == "sequence" and bundle.labels[-1] == "squiggle"
    assert bundle.predict_raw([ds_drawing(data)]).shape == (1, 21)


def ds_drawing(data: Path) -> list:
    from imgclass.data.store import PreparedDataset

    with PreparedDataset.open(data) as ds:
        return ds.strokes("train", 0)


def test_an_int8_champion_gets_an_int8_challenger(world, tmp_path, monkeypatch, capsys):
    """A promotion must not swap a fast int8 champion for a slow float one: the
    challenger is quantized the same way (and judged as such)."""
    from imgclass.experiments.model_registry import ModelRegistry
    from imgclass.quantize import quantize_bundle

    monkeypatch.chdir(tmp_path)
    int8 = quantize_bundle(
        world["champion"], world["data"], out=tmp_path / "int8", tolerance=5, min_speedup=0
    )
    uri = fresh_store(tmp_path / "mlflow.db")
    registry = ModelRegistry(uri)
    registry.register(int8.out, "digits", alias="champion")
    images, labels = held_out_digits(120, classes=(8, 9))
    db = tmp_path / "feedback.sqlite3"
    add_feedback(db, images, labels)
    w = {"uri": uri, "db": db}
    args = retrain_args(w, tmp_path / "run", "--epochs", "2", "--no-promote", "--json")
    assert main(["-q", *args]) == 0
    out = json.loads(capsys.readouterr().out)
    challenger = registry.fetch_bundle("digits", out["challenger_version"])
    quantized = load_bundle(challenger).model_json.get("quantization")
    assert quantized and quantized["format"] == "qdq-int8"
    assert (tmp_path / "run" / "challenger" / "bundle").is_dir()  # the float one stays beside
    assert set(load_bundle(challenger).labels) >= {"8", "9"}
