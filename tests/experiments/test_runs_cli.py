"""`imgclass runs` over a real temporary MLflow store holding two trained runs (cnn-small
and pca-svm on the built-in digits): table and JSON, sorting, filters, errors."""

from __future__ import annotations

import json

import pytest

from imgclass.cli import main
from mlflow_support import fresh_store


@pytest.fixture(scope="module")
def runs_store(tmp_path_factory):
    """(store uri, dataset folder, {model: run id}) after training both models."""
    root = tmp_path_factory.mktemp("runs")
    data, uri = root / "digits", fresh_store(root / "store" / "mlflow.db")
    prepare = ["-q", "data", "prepare", "--builtin", "digits", "--per-class", "20"]
    assert main([*prepare, "--out", str(data)]) == 0
    ids = {}
    for model, sets in (("pca-svm", "n_components=10"), ("cnn-small", "num_threads=1")):
        out = root / model
        args = ["--data", str(data), "--out", str(out), "--model", model, "--set", sets]
        assert main(["-q", "train", *args, "--epochs", "1", "--tracking-uri", uri]) == 0
        ids[model] = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    return uri, data, ids


def runs(capsys, uri: str, *args: str) -> dict:
    assert main(["runs", "--tracking-uri", uri, "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_lists_both_runs_best_test_accuracy_first(runs_store, capsys):
    uri, _, ids = runs_store
    listed = runs(capsys, uri)["runs"]
    assert {r["run_id"] for r in listed} == set(ids.values())
    accuracies = [r["test_accuracy"] for r in listed]
    assert accuracies == sorted(accuracies, reverse=True)
    by_model = {r["model"]: r for r in listed}
    assert by_model["cnn-small"]["epochs"] == 1 and by_model["pca-svm"]["epochs"] is None
    assert all(r["dataset"] == "digits" and r["status"] == "FINISHED" for r in listed)
    reverse = runs(capsys, uri, "--reverse")["runs"]
    assert [r["run_id"] for r in reverse] == [r["run_id"] for r in listed][::-1]


def test_the_table_shows_each_run(runs_store, capsys):
    uri, _, ids = runs_store
    assert main(["runs", "--tracking-uri", uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["run", "model", "dataset", "status"]
    assert len(lines) == 4  # header, rule, two runs
    body = "\n".join(lines[2:])
    for model, run_id in ids.items():
        assert model in body and run_id[:8] in body


def test_sorting_by_a_loss_puts_runs_without_it_last(runs_store, capsys):
    uri, _, ids = runs_store
    listed = runs(capsys, uri, "--sort", "val_loss")["runs"]
    assert [r["model"] for r in listed] == ["cnn-small", "pca-svm"]  # pca-svm has no epochs
    assert main(["runs", "--tracking-uri", uri, "--sort", "val_loss"]) == 0
    assert "val_loss" in capsys.readouterr().out.splitlines()[0]  # the sort metric is shown


def test_filters(runs_store, capsys):
    uri, data, ids = runs_store
    only = runs(capsys, uri, "--model", "pca-svm")["runs"]
    assert [r["run_id"] for r in only] == [ids["pca-svm"]]
    assert len(runs(capsys, uri, "--data", "digits")["runs"]) == 2
    assert len(runs(capsys, uri, "--data", str(data))["runs"]) == 2
    assert runs(capsys, uri, "--data", "doodles")["runs"] == []
    assert len(runs(capsys, uri, "--limit", "1")["runs"]) == 1
    assert len(runs(capsys, uri, "--experiment", "imgclass")["runs"]) == 2


def test_errors_name_what_exists(runs_store, capsys):
    uri, _, _ = runs_store
    assert main(["runs", "--tracking-uri", uri, "--sort", "accuracy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --sort accuracy: no run has this metric")
    assert "test_accuracy" in err and "val_loss" in err
    assert main(["runs", "--tracking-uri", uri, "--experiment", "nope"]) == 2
    assert "no such experiment (experiments: " in (err := capsys.readouterr().err)
    assert "imgclass" in err
    assert main(["runs", "--tracking-uri", uri, "--limit", "0"]) == 2


def test_an_empty_or_missing_store_is_a_friendly_message(tmp_path, capsys, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"
    assert main(["runs", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out.startswith(f"no runs found in {uri}")
    assert not (tmp_path / "none").exists()  # listing creates no store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["runs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "tracking_uri": uri,
        "sort": "test_accuracy",
        "runs": [],
    }
