"""MLflow tracking of `imgclass train`, read back through MLflow's own client from a
temporary SQLite store: params, per-epoch metrics, final metrics equal to the bundle's,
artifacts, the logged model's signature, tags, failed and killed runs, --no-track, the
MLFLOW_TRACKING_URI variable, resume, nested runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest
from mlflow.tracking import MlflowClient

from imgclass.cli import main
from imgclass.data.store import manifest_hash
from imgclass.experiments import mlflow_store, tracking
from imgclass.train.config import resolve_config
from mlflow_support import fresh_store


@pytest.fixture(scope="module")
def digits(digits_dir):
    """The session's built-in real MNIST digits (tests/conftest.py)."""
    return digits_dir


def train(data, out, *extra: str) -> int:
    return main(["-q", "train", "--data", str(data), "--out", str(out), *extra])


def store(tmp_path) -> str:
    """A fresh store of the test's own (a copy of an empty one: see mlflow_support)."""
    return fresh_store(tmp_path / "store" / "mlflow.db")


def new_store_uri(tmp_path) -> str:
    """The URI of a store that does not exist yet, for the tests of its creation."""
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, digits):
    """cnn-small trained 2 epochs with tracking: (store uri, run folder, MLflow run)."""
    root = tmp_path_factory.mktemp("tracked")
    uri, out = store(root), root / "run"
    sets = ["--set", "lr=0.002", "--set", "num_threads=1"]
    assert (
        train(digits, out, "--model", "cnn-small", "--epochs", "2", "--tracking-uri", uri, *sets)
        == 0
    )
    record = json.loads((out / "mlflow_run.json").read_text())
    return uri, out, MlflowClient(uri).get_run(record["run_id"])


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    """Every artifact path of a run (recursively)."""
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_params_metrics_and_tags_read_back(cnn_run, digits):
    uri, out, run = cnn_run
    assert run.info.status == "FINISHED"
    assert re.fullmatch(r"cnn-small-digits-\d{8}-\d{4}", run.info.run_name)
    params = run.data.params
    assert params["model"] == "cnn-small" and params["epochs"] == "2"
    assert float(params["lr"]) == 0.002 and params["augment.preset"] == "none"
    assert params["data.num_classes"] == "10" and params["system.python"]
    assert params["version.torch"] and params["version.mlflow"]
    tags = run.data.tags
    assert tags["imgclass.family"] == "cnn" and tags["imgclass.model"] == "cnn-small"
    assert tags["imgclass.dataset"] == "digits"
    assert tags["imgclass.dataset_path"] == str(digits.resolve())
    assert tags["imgclass.dataset_manifest_sha256"] == manifest_hash(digits)
    assert json.loads(tags["imgclass.dataset_source"])[0]["format"] == "npz"
    if tracking.git_commit() is not None:  # tests run inside the git checkout
        assert re.fullmatch(r"[0-9a-f]{40}", tags["mlflow.source.git.commit"])
    assert json.loads((out / "mlflow_run.json").read_text()) == {
        "tracking_uri": uri,
        "experiment_id": run.info.experiment_id,
        "run_id": run.info.run_id,
    }


def test_per_epoch_and_final_metrics_match_the_bundle(cnn_run):
    uri, out, run = cnn_run
    client = MlflowClient(uri)
    bundle_metrics = json.loads((out / "bundle" / "metrics.json").read_text())
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [1, 2], key
        assert [m.value for m in history] == pytest.approx(
            [row[key] for row in bundle_metrics["history"]]
        )
    metrics = run.data.metrics
    assert metrics["test_accuracy"] == pytest.approx(bundle_metrics["test"]["accuracy"])
    assert metrics["test_top3_accuracy"] == pytest.approx(bundle_metrics["test"]["top3_accuracy"])
    assert metrics["valid_accuracy"] == pytest.approx(bundle_metrics["valid"]["accuracy"])
    assert metrics["epochs"] == 2 and metrics["total_seconds"] > 0


def test_artifacts_and_the_logged_model_signature(cnn_run):
    import mlflow

    uri, out, run = cnn_run
    client = MlflowClient(uri)
    found = artifacts(client, run.info.run_id)
    bundle = {f"bundle/{p.name}" for p in (out / "bundle").iterdir()}
    assert "bundle/model.onnx" in bundle and bundle <= found
    assert {
        "report/confusion.png",
        "report/per_class_f1.png",
        "report/training_curves.png",
    } <= found
    assert {"config.yaml", "dataset/manifest.json", "report/index.html"} <= found
    assert (out / "report" / "report.json").is_file()
    # the artifacts live beside the temporary database, not in the working directory
    db = mlflow_store.sqlite_path(uri)
    assert db is not None and run.info.artifact_uri.startswith((db.parent / "artifacts").as_uri())
    logged = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
    (given,), (answer,) = logged.signature.inputs.inputs, logged.signature.outputs.inputs
    assert (given.name, given.shape, str(given.type)) == ("input", (-1, 1, 28, 28), "float32")
    assert (answer.name, answer.shape, str(answer.type)) == ("probabilities", (-1, 10), "float32")
    assert logged.flavors["onnx"]["data"] == "model.onnx"


def test_pca_svm_is_tracked_in_the_store_of_mlflow_tracking_uri(digits, tmp_path, monkeypatch):
    uri = new_store_uri(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "svm"
    assert train(digits, out, "--model", "pca-svm", "--set", "n_components=10") == 0
    record = json.loads((out / "mlflow_run.json").read_text())
    assert record["tracking_uri"] == uri and (tmp_path / "store" / "mlflow.db").is_file()
    client = MlflowClient(uri)
    run = client.get_run(record["run_id"])
    expected = json.loads((out / "bundle" / "metrics.json").read_text())["test"]["accuracy"]
    assert run.data.metrics["test_accuracy"] == pytest.approx(expected)
    assert "train_loss" not in run.data.metrics and "epochs" not in run.data.metrics  # no epochs
    assert run.data.params["model_args.n_components"] == "10"
    assert run.data.tags["imgclass.family"] == "pca-svm"
    assert "bundle/model.onnx" in artifacts(client, run.info.run_id)


def test_no_track_writes_no_store(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", new_store_uri(tmp_path))
    monkeypatch.chdir(tmp_path)  # the default store would be ./work/mlflow
    out = tmp_path / "run"
    assert train(digits, out, "--model", "pca-svm", "--set", "n_components=10", "--no-track") == 0
    assert (out / "bundle" / "model.onnx").is_file()
    assert not (tmp_path / "store").exists() and not (tmp_path / "work").exists()
    assert not (out / "mlflow_run.json").exists()


def test_a_disabled_tracker_never_imports_mlflow(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from imgclass.experiments.tracking import track_training
        from imgclass.train.config import TrainConfig
        from imgclass.train.run import TrainOutcome
        with track_training(TrainConfig(), Path("x"), Path({str(tmp_path)!r}), enabled=False) as t:
            t.callback(1, {{"train_loss": 1.0}})
            t.finish(TrainOutcome(Path("b"), {{}}, 1.0, "cnn-small"))
        assert t.run_id is None
        assert "mlflow" not in sys.modules, "mlflow imported"
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_run_that_fails_is_marked_failed(digits, tmp_path, capsys):
    uri = store(tmp_path)
    out = tmp_path / "run"
    # stroke-rnn needs strokes: the error comes from inside train(), after the run started
    assert train(digits, out, "--model", "stroke-rnn", "--tracking-uri", uri) == 2
    assert "needs strokes" in capsys.readouterr().err
    run = MlflowClient(uri).get_run(json.loads((out / "mlflow_run.json").read_text())["run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["imgclass.error"].startswith("ConfigError: stroke-rnn needs strokes")


def test_interrupted_runs_are_killed_and_nested_runs_have_their_parent(digits, tmp_path):
    import mlflow

    uri = store(tmp_path)
    cfg = resolve_config("cnn-small", None, [])
    mlflow_store.configure(uri, "search")
    with mlflow.start_run(run_name="parent") as parent:
        with tracking.track_training(
            cfg,
            digits,
            tmp_path / "t0",
            uri=uri,
            experiment="search",
            nested=True,
            tags={"trial": "0"},
        ) as child:
            child.callback(1, {"val_accuracy": 0.5, "epoch": 1})
        with (
            pytest.raises(KeyboardInterrupt),
            tracking.track_training(cfg, digits, tmp_path / "t1", uri=uri, nested=True) as t1,
        ):
            raise KeyboardInterrupt
    client = MlflowClient(uri)
    first, second = client.get_run(str(child.run_id)), client.get_run(str(t1.run_id))
    assert first.info.status == "FINISHED" and second.info.status == "KILLED"
    for run in (first, second):
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.experiment_id == parent.info.experiment_id  # the search's experiment
    assert first.data.tags["trial"] == "0" and "epoch" not in first.data.metrics
    assert client.get_experiment(first.info.experiment_id).name == "search"
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def test_resume_continues_the_same_run(digits, tmp_path):
    uri, out = store(tmp_path), tmp_path / "run"
    base = ["--model", "cnn-small", "--tracking-uri", uri, "--set", "num_threads=1"]
    assert train(digits, out, *base, "--epochs", "1") == 0
    first = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    assert train(digits, out, *base, "--epochs", "2", "--resume") == 0
    assert json.loads((out / "mlflow_run.json").read_text())["run_id"] == first
    history = MlflowClient(uri).get_metric_history(first, "train_loss")
    assert [m.step for m in history] == [1, 2]


def test_a_store_that_cannot_be_opened_is_a_clear_error(digits, tmp_path, capsys):
    args = ["--model", "pca-svm", "--tracking-uri", "nosuchscheme://x"]
    assert train(digits, tmp_path / "run", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: tracking store nosuchscheme://x") and "--no-track" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "bundle").exists()


def test_store_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    default = f"sqlite:///{tmp_path / 'work' / 'mlflow' / 'mlflow.db'}"
    assert mlflow_store.resolve_tracking_uri() == default
    assert mlflow_store.artifact_root(default) == tmp_path / "work" / "mlflow" / "artifacts"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert mlflow_store.resolve_tracking_uri() == "sqlite:///env.db"
    assert mlflow_store.resolve_tracking_uri("http://mlflow:5000") == "http://mlflow:5000"
    assert mlflow_store.artifact_root("http://mlflow:5000") is None
    assert tracking.flatten({"a": {"b": 1.5, "c": [1, 2]}, "d": "x" * 7000}) == {
        "a.b": "1.5",
        "a.c": "[1, 2]",
        "d": "x" * tracking.MAX_PARAM_LENGTH,
    }


def test_a_terminated_training_ends_killed(digits, tmp_path):
    import os
    import signal
    import time

    uri, out = store(tmp_path), tmp_path / "run"
    args = ["--model", "cnn-small", "--epochs", "300", "--tracking-uri", uri]
    cmd = [
        sys.executable,
        "-m",
        "imgclass",
        "-q",
        "train",
        "--data",
        str(digits),
        "--out",
        str(out),
    ]
    proc = subprocess.Popen([*cmd, *args, "--set", "num_threads=1"], stderr=subprocess.PIPE)
    try:
        # a condition, not a sleep: on a loaded machine starting Python, torch and MLflow
        # took over 60 s, so the limit is generous; a quiet one waits a few seconds
        deadline = time.monotonic() + 300
        while not (out / "mlflow_run.json").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        # killed while it trains (its first epoch logged), not while MLflow sets the run up
        run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
        while not MlflowClient(uri).get_run(run_id).data.metrics:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=60)
        assert code == 143, proc.stderr.read().decode(errors="replace")[-4000:]
    finally:
        proc.kill()
    run = MlflowClient(uri).get_run(json.loads((out / "mlflow_run.json").read_text())["run_id"])
    assert run.info.status == "KILLED" and run.data.tags["imgclass.error"].startswith("SystemExit")
