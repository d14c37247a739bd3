"""``imgclass tune``: real Optuna studies in SQLite, real MLflow stores, real training.

Tiny trials (cnn-small, 1-2 epochs on 273 built-in digits) so the file stays fast on
two busy cores; the search spaces of every registered model are checked against
``resolve_config`` without training.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from PIL import Image

from imgclass.cli import main
from imgclass.errors import ConfigError
from imgclass.experiments.tuning import TuneSettings, as_sets, open_study, tune
from imgclass.experiments.tuning_plots import importances
from imgclass.models import list_models, model_info
from imgclass.train.config import AUGMENT_KEYS, resolve_config
from mlflow_support import fresh_store

GOOD = {"lr": 3e-3, "weight_decay": 1e-4, "batch_size": 32, "dropout": 0.2, "augment_strength": 0}
BAD = {"lr": 1e-4, "weight_decay": 1e-4, "batch_size": 128, "dropout": 0.5, "augment_strength": 1}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def digits(digits_dir):
    """The built-in digits of tests/conftest.py (30 per class), shared with the trainer tests."""
    return digits_dir


def store(tmp_path):
    return fresh_store(tmp_path / "mlflow" / "mlflow.db")


def runs_of(uri):
    client = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client, client.search_runs(ids, max_results=100)


def assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as picture:
        assert picture.size[0] > 100 and picture.size[1] > 100


# --- search spaces -------------------------------------------------------------------


@pytest.mark.parametrize("name", list_models())
def test_every_search_space_is_accepted_by_resolve_config(name):
    space = model_info(name).search_space
    assert space is not None, f"{name} declares no search space"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(6):
        overrides = space(study.ask())
        cfg = resolve_config(name, sets=as_sets(overrides))
        for key, value in overrides.items():
            head, _, rest = key.partition(".")
            if head == "model":
                assert cfg.model_args[rest] == value, key
            elif head == "augment":
                assert rest in AUGMENT_KEYS and getattr(cfg.augment, rest) == pytest.approx(value)
            else:
                assert getattr(cfg, key) == pytest.approx(value), key


def test_spaces_cover_what_the_issue_asks_for():
    def keys(name):
        return set(model_info(name).search_space(optuna.trial.FixedTrial(FIXED[name])))

    FIXED = {
        "cnn-small": GOOD,
        "cnn-resnet": {**GOOD, "width": 32},
        "pca-svm": {"C": 1.0, "gamma": "scale", "n_components": 30},
    }
    assert {"lr", "weight_decay", "batch_size", "model.dropout", "augment.rotation"} <= keys(
        "cnn-small"
    )
    assert "model.width" in keys("cnn-resnet")
    assert keys("pca-svm") == {"model.C", "model.gamma", "model.n_components"}


# --- a study with pruning, tracked ---------------------------------------------------


def test_tune_prunes_tracks_nested_runs_and_writes_outputs(digits, tmp_path, monkeypatch):
    uri = store(tmp_path)
    out = tmp_path / "tune"
    settings = TuneSettings(
        data=digits, model="cnn-small", trials=3, epochs=2, out=out, startup_trials=1,
        warmup_epochs=0, tracking_uri=uri, experiment="tuning-test",
    )  # fmt: skip
    study = open_study(settings)
    study.enqueue_trial(GOOD)  # a reasonable trial first, then one that learns nothing
    study.enqueue_trial(BAD)  # in an epoch: the median pruner stops it
    seen = []
    result = tune(settings, on_trial=seen.append)

    stored = optuna.load_study(study_name="cnn-small-digits", storage=f"sqlite:///{out}/optuna.db")
    states = [t.state for t in stored.trials]
    assert len(states) == 3 and TrialState.RUNNING not in states
    assert states[0] == TrialState.COMPLETE and states[1] == TrialState.PRUNED
    assert result.counts["complete"] >= 1 and result.counts["pruned"] >= 1
    assert [r.number for r in seen] == [0, 1, 2] and seen[1].state == "PRUNED"
    best = stored.best_trial
    assert result.best_value == best.value and result.best_trial == best.number
    assert 0 < best.value <= 1 and "test_accuracy" in best.user_attrs  # recorded, not optimised

    # MLflow: the study is the parent run, each trial a nested run; the pruned one KILLED
    client, runs = runs_of(uri)
    parent = next(r for r in runs if r.info.run_name == "tune-cnn-small-digits")
    assert parent.info.run_id == result.parent_run_id and parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["imgclass.trial"] for r in children) == ["0", "1", "2"]
    pruned = next(r for r in children if r.data.tags["imgclass.trial"] == "1")
    assert pruned.info.status == "KILLED" and pruned.data.tags["imgclass.pruned"] == "true"
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"best.yaml", "history.png", "importance.png"} <= logged

    # best.yaml is the best trial's configuration, and imgclass train accepts it
    cfg = resolve_config(None, result.best_config)
    assert cfg.model == "cnn-small" and cfg.lr == pytest.approx(best.params["lr"])
    assert cfg.model_args["dropout"] == pytest.approx(best.params["dropout"])
    assert_png(result.history_plot)
    assert_png(result.importance_plot)
    # only the best trial's folder stays, with its bundle and without checkpoints
    assert sorted(p.name for p in out.glob("trial-*")) == [f"trial-{best.number}"]
    assert (result.best_bundle / "model.onnx").is_file()
    assert not (out / f"trial-{best.number}" / "checkpoints").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run = tmp_path / "retrain"
    args = ["-q", "train", "--data", str(digits), "--out", str(run), "--epochs", "1"]
    assert main([*args, "--config", str(result.best_config)]) == 0
    assert (run / "bundle" / "model.onnx").is_file()


# --- an interrupted study resumes ----------------------------------------------------


def test_an_interrupted_study_resumes_to_the_total_wanted(digits, tmp_path, capsys):
    uri = store(tmp_path)
    out = tmp_path / "tune"
    common = ["-q", "tune", "--data", str(digits), "--model", "cnn-small", "--study", "s"]
    common += ["--out", str(out), "--epochs", "1", "--pruner", "none", "--tracking-uri", uri]
    assert main([*common, "--trials", "2", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["counts"]["complete"] == 2 and first["ran"] == 2
    storage = f"sqlite:///{out}/optuna.db"
    before = {
        t.number: (t.params, t.value)
        for t in optuna.load_study(study_name="s", storage=storage).trials
    }

    # a process killed in the middle of a trial leaves it RUNNING, with a half-made folder
    killed = optuna.load_study(study_name="s", storage=storage).ask()
    (out / f"trial-{killed.number}" / "checkpoints").mkdir(parents=True)

    assert main([*common, "--trials", "4", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert second["stale_failed"] == 1 and second["ran"] == 2
    assert second["counts"] == {"complete": 4, "pruned": 0, "failed": 1, "running": 0}
    assert trials[killed.number].state == TrialState.FAIL
    assert {n: (trials[n].params, trials[n].value) for n in before} == before  # kept as they were
    assert not (out / f"trial-{killed.number}").exists()  # the killed trial's leftovers

    # the same MLflow parent run goes on, now with four finished trials under it
    assert second["parent_run_id"] == first["parent_run_id"]
    _, runs = runs_of(uri)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == first["parent_run_id"]]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)

    # four completed trials: the importances are estimated, not replaced by a note
    found = importances(optuna.load_study(study_name="s", storage=storage))
    assert found is not None and set(found) == set(trials[0].params)
    assert_png(out / "importance.png")

    # nothing is missing: a third call runs no trial and rewrites the outputs
    assert main([*common, "--trials", "4"]) == 0
    assert "4 complete, 0 pruned, 1 failed" in capsys.readouterr().out


# --- pca-svm, no tracking ------------------------------------------------------------


def test_pca_svm_tune_without_tracking(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default out and store would land here
    settings = TuneSettings(data=digits, model="pca-svm", trials=2, track=False)
    result = tune(settings)
    assert result.counts["complete"] == 2 and result.parent_run_id is None
    assert result.out == Path("work/tune/pca-svm-digits")
    cfg = resolve_config(None, tmp_path / result.best_config)
    assert cfg.model == "pca-svm" and {"C", "gamma", "n_components"} <= set(cfg.model_args)
    assert_png(tmp_path / result.importance_plot)  # two trials: importances, or a note why
    assert not (tmp_path / "work" / "mlflow").exists()


# --- mistakes ------------------------------------------------------------------------


def test_mistakes_are_reported_before_any_trial(digits, tmp_path, capsys):
    base = ["tune", "--data", str(digits), "--out", str(tmp_path / "t"), "--no-track"]
    assert main([*base, "--model", "cnn-small", "--set", "lrr=1"]) == 2
    assert "unknown setting 'lrr'" in capsys.readouterr().err
    assert main([*base, "--model", "cnn-small", "--trials", "0"]) == 2
    assert not (tmp_path / "t" / "optuna.db").exists()
    settings = TuneSettings(data=digits, model="cnn-small", out=tmp_path / "t", track=False)
    open_study(settings)
    other = TuneSettings(
        data=digits, model="cnn-3conv", study="cnn-small-digits", out=tmp_path / "t"
    )
    with pytest.raises(ConfigError, match="searches cnn-small"):
        open_study(other)


# --- time limit ----------------------------------------------------------------------


def test_a_time_limited_search_shares_its_budget_and_stops_starting_trials(digits, tmp_path):
    import time

    settings = TuneSettings(
        data=digits, model="cnn-small", trials=50, epochs=30, out=tmp_path / "t",
        time_limit="30s", track=False, pruner="none",
    )  # fmt: skip
    started = time.monotonic()
    result = tune(settings)
    seconds = time.monotonic() - started
    study = open_study(settings)
    trials = study.get_trials(deepcopy=False)
    assert 1 <= result.ran < 50  # 50 trials of 30 epochs do not fit in 30 s
    assert seconds < 30 * 2  # generous: shared, noisy machines (bench_budget.py measures)
    shares = [t.user_attrs["time_limit"] for t in trials]
    assert all(5 <= share <= 30 for share in shares)
    assert result.best_value is not None


def test_a_bad_search_time_limit_is_refused(digits, tmp_path, capsys):
    base = ["tune", "--data", str(digits), "--out", str(tmp_path / "t"), "--no-track"]
    assert main([*base, "--model", "cnn-small", "--time-limit", "soon"]) == 2
    assert "--time-limit 'soon'" in capsys.readouterr().err
