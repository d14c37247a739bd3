"""Issue 10, CLI defects: a tuning study resumed on other data or settings, `imgclass runs`
before any run finished, training silent in a log file, library warnings under -q.

Real Optuna studies in SQLite, a real MLflow store, real training on the built-in digits
(tests/conftest.py), and `imgclass` run as a subprocess where what matters is what a
person sees on stderr.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from imgclass.cli import main
from imgclass.errors import ConfigError
from imgclass.experiments.tuning import TuneSettings, open_study
from imgclass.models import registry
from mlflow_support import fresh_store

SRC = Path(__file__).resolve().parents[2] / "src"


def imgclass(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m imgclass ARGS`` with stderr a pipe (not a terminal), one torch thread."""
    environ = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", **(env or {})}
    environ.pop("PYTHONWARNINGS", None)  # the default filters: what a person gets
    return subprocess.run(
        [sys.executable, "-m", "imgclass", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
    )


# --- a study belongs to its dataset, model, search space and fixed settings ----------


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory, digits_dir):
    """A/ds and B/ds: two different datasets in folders of the same name."""
    root = tmp_path_factory.mktemp("same-name")
    shutil.copytree(digits_dir, root / "A" / "ds")
    args = ["-q", "data", "prepare", "--builtin", "digits", "--per-class", "12"]
    assert main([*args, "--out", str(root / "B" / "ds")]) == 0
    return root / "A" / "ds", root / "B" / "ds"


@pytest.mark.usefixtures("one_torch_thread")
def test_a_study_is_not_resumed_on_another_dataset_of_the_same_name(
    two_datasets, tmp_path, monkeypatch, capsys, caplog
):
    a, b = two_datasets
    monkeypatch.chdir(tmp_path)  # the default study folder: work/tune/cnn-small-ds
    common = ["tune", "--model", "cnn-small", "--epochs", "1", "--no-track", "--pruner", "none"]
    with caplog.at_level(logging.INFO):
        assert main([*common, "--data", str(a), "--trials", "1"]) == 0
    assert any(r.getMessage().startswith("trial 0 COMPLETE") for r in caplog.records)
    capsys.readouterr()
    out = tmp_path / "work" / "tune" / "cnn-small-ds"
    best = (out / "best.yaml").read_text()

    assert main([*common, "--data", str(b), "--trials", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: study 'cnn-small-ds' in ") and err.count("\n") == 1
    assert f"searches another dataset: {a.resolve()}" in err and f"not {b.resolve()}" in err
    assert "choose a new --study name" in err
    storage = f"sqlite:///{(out / 'optuna.db').resolve()}"
    assert len(optuna.load_study(study_name="cnn-small-ds", storage=storage).trials) == 1
    assert (out / "best.yaml").read_text() == best  # the first data's answer, untouched

    # the advice works: a new study name on the new data
    assert main([*common, "--data", str(b), "--trials", "1", "--study", "b-digits"]) == 0
    assert (tmp_path / "work" / "tune" / "b-digits" / "best.yaml").is_file()


def settings(data: Path, out: Path, **changes) -> TuneSettings:
    base = dict(data=data, model="cnn-small", out=out, epochs=1, track=False)
    return TuneSettings(**{**base, **changes})


def started_study(data: Path, out: Path, **changes) -> optuna.Study:
    """A study with one (running) trial, so that it has something to contradict."""
    study = open_study(settings(data, out, **changes))
    study.ask()
    return study


def test_changed_fixed_settings_are_refused_and_runtime_ones_are_not(digits_dir, tmp_path):
    started_study(digits_dir, tmp_path, sets=["batch_size=32"])
    open_study(settings(digits_dir, tmp_path, sets=["batch_size=32", "num_threads=1"]))
    with pytest.raises(ConfigError, match=r"other fixed settings \(epochs: 1 in the study, 2 now"):
        open_study(settings(digits_dir, tmp_path, sets=["batch_size=32"], epochs=2))
    with pytest.raises(ConfigError, match=r"batch_size: fixed by --set in the study, searched now"):
        open_study(settings(digits_dir, tmp_path))
    with pytest.raises(ConfigError, match=r"label_smoothing: 0.0 in the study, 0.1 now"):
        open_study(settings(digits_dir, tmp_path, sets=["batch_size=32", "label_smoothing=0.1"]))
    with pytest.raises(ConfigError, match=r"searches cnn-small, not cnn-3conv.*--model cnn-small"):
        open_study(settings(digits_dir, tmp_path, model="cnn-3conv", study="cnn-small-digits"))


def test_a_changed_search_space_is_refused(digits_dir, tmp_path, monkeypatch):
    started_study(digits_dir, tmp_path)
    info = registry._REGISTRY["cnn-small"]

    def wider(trial):  # cnn-small's space with a wider learning-rate range
        return {
            "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
            "model.dropout": trial.suggest_float("dropout", 0.0, 0.6),
            "augment.rotation": 15 * trial.suggest_float("augment_strength", 0.0, 1.0),
        }

    monkeypatch.setitem(
        registry._REGISTRY, "cnn-small", dataclasses.replace(info, search_space=wider)
    )
    with pytest.raises(
        ConfigError, match=r"another space \(lr: 0.0001..0.01 log in the study, 1e-05"
    ):
        open_study(settings(digits_dir, tmp_path))


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"model": "cnn-small", "data": "/old/digits"}, "made by an older imgclass"),
        ({"model": "cnn-small", "imgclass_study_format": 99}, "made by a newer imgclass"),
        ({}, "is not an imgclass study"),
    ],
)
def test_a_study_from_another_version_is_refused(digits_dir, tmp_path, attrs, message):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="old", storage=storage, direction="maximize")
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    study.ask()
    with pytest.raises(ConfigError, match=message):
        open_study(settings(digits_dir, tmp_path, study="old", storage=storage))


# --- imgclass runs before any run finished -------------------------------------------


def make_run(client: MlflowClient, experiment: str, name: str, metrics: dict, finished: bool):
    tags = {"imgclass.model": "cnn-small", "imgclass.dataset": "digits"}
    run = client.create_run(experiment, run_name=name, tags=tags)
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    if finished:
        client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def test_runs_lists_runs_that_have_not_finished(tmp_path, capsys):
    uri = fresh_store(tmp_path / "mlflow.db")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("imgclass")
    older = make_run(client, experiment, "older", {"train_loss": 2.0}, finished=False)
    newer = make_run(client, experiment, "newer", {}, finished=False)
    capsys.readouterr()  # MLflow's own lines about creating the store

    assert main(["runs", "--tracking-uri", uri]) == 0
    out, err = capsys.readouterr()
    rows = out.splitlines()[2:]
    assert [r.split()[0] for r in rows] == ["newer", "older"] and "RUNNING" in rows[0]
    assert err == (
        "note: no listed run has test_accuracy yet (2 still running: a run records it when it "
        "finishes); newest first\n"
    )
    assert main(["runs", "--tracking-uri", uri, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed["runs"]] == [newer, older] and "newest first" in listed[
        "note"
    ]

    # once one has finished, it comes first; the others follow, newest first
    done = make_run(client, experiment, "done", {"test_accuracy": 0.9}, finished=True)
    assert main(["runs", "--tracking-uri", uri, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed["runs"]] == [done, newer, older] and "note" not in listed
    # a typo is still an error naming what exists
    assert main(["runs", "--tracking-uri", uri, "--sort", "test_acuracy"]) == 2
    assert "available: " in capsys.readouterr().err


# --- what a person sees on stderr ----------------------------------------------------


def test_training_logs_progress_epochs_and_a_summary_when_stderr_is_not_a_terminal(
    digits_dir, tmp_path
):
    args = ["train", "--data", str(digits_dir), "--model", "cnn-small", "--epochs", "1"]
    args += ["--out", str(tmp_path / "run"), "--no-track", "--set", "batch_size=32"]
    done = imgclass(*args, env={"IMGCLASS_PROGRESS_SECONDS": "0"})
    assert done.returncode == 0, done.stderr
    err = done.stderr.splitlines()
    assert any(re.match(r"INFO: epoch 1/1: \d+/273 samples \(\d+%\), ", line) for line in err), err
    assert any(line.startswith("INFO: epoch 1/1 train_loss ") for line in err), err
    assert done.stdout.startswith("cnn-small: test accuracy ") and ", 1 epoch, " in done.stdout

    args[args.index(str(tmp_path / "run"))] = str(tmp_path / "quiet")
    quiet = imgclass("-q", *args, env={"IMGCLASS_PROGRESS_SECONDS": "0"})
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout.startswith("cnn-small: test accuracy ")  # the result, not chatter
    missing = imgclass("-q", "train", "--data", str(tmp_path / "nothing"), "--out", "x")
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")


def test_pca_svm_training_prints_no_library_warning(digits_dir, tmp_path):
    args = ["-q", "train", "--data", str(digits_dir), "--model", "pca-svm"]
    done = imgclass(*args, "--out", str(tmp_path / "run"), "--no-track")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no FutureWarning about SVC.probA_ / probB_
    assert done.stdout.startswith("pca-svm: test accuracy ")


def test_stroke_rnn_export_prints_no_torch_warning():
    script = """
import numpy as np, torch
from imgclass.onnx_export import export_onnx
from imgclass.models import create_model
torch.manual_seed(0)
x = np.random.default_rng(0).random((3, 9, 5), dtype=np.float32)
for cell in ("gru", "lstm"):
    export_onnx(create_model("stroke-rnn", 4, hidden=8, cell=cell).eval(), x, np.array([9, 4, 1]))
print("exported")
"""
    environ = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    environ.pop("PYTHONWARNINGS", None)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environ, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "exported\n" and done.stderr == ""
