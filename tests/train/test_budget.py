"""The training time budget (``--time-limit``): durations, the planning arithmetic, and
small real trainings that must stop on time with their schedule fitted and recorded.

Timing here is checked with generous tolerances (the test machines are shared and
noisy); how close to the budget a run really lands is measured by bench/bench_budget.py.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
import torch

from imgclass.cli import main
from imgclass.errors import ConfigError
from imgclass.models import create_model
from imgclass.train.batches import ArrayBatches
from imgclass.train.budget import (
    BudgetPlanner,
    Speed,
    TimeBudget,
    fitted_config,
    parse_duration,
    plan_phase,
)
from imgclass.train.config import resolve_config
from imgclass.train.optim import Schedule
from imgclass.train.trainer import Trainer

# --- durations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1.5h", 5400), ("1h30m", 5400), ("45", 45), ("2.5", 2.5),
     (" 3 M ", 180), (120, 120)],
)  # fmt: skip
def test_durations_in_seconds_minutes_hours_or_plain_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10x", "m", "", "ten minutes", "-5", "0", "0s", "1e400", "5 m s"])
def test_a_bad_duration_is_a_clear_error(text):
    with pytest.raises(ConfigError, match="--time-limit"):
        parse_duration(text)


def test_time_limit_in_the_configuration_takes_durations_and_off():
    assert resolve_config("cnn-small", sets=["time_limit=2m"]).time_limit == 120
    assert resolve_config("cnn-small", sets=["time_limit=off"]).time_limit == 0
    assert resolve_config("cnn-small").time_limit == 0
    with pytest.raises(ConfigError, match="time_limit"):
        resolve_config("cnn-small", sets=["time_limit=soon"])


def test_cli_refuses_a_bad_time_limit_in_one_line(tmp_path, digits_dir, capsys):
    code = main(["train", "--data", str(digits_dir), "--out", str(tmp_path / "r"),
                 "--model", "cnn-small", "--time-limit", "10 minutes", "--no-track"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "--time-limit '10 minutes'" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "r" / "bundle").exists()


# --- planning arithmetic -------------------------------------------------------------


def test_the_epochs_that_fit_never_more_than_the_cap():
    speed = Speed(step_seconds=0.1, eval_seconds_per_sample=0.001, epoch_overhead=0.1)
    # an epoch: 10 steps (1 s) + 100 validated (0.1 s) + 0.1 s = 1.2 s
    assert plan_phase(12.5, speed, 10, 100, cap=30).epochs == 10
    assert plan_phase(100.0, speed, 10, 100, cap=30).epochs == 30
    whole = plan_phase(1.3, speed, 10, 100, cap=30)
    assert (whole.epochs, whole.steps, whole.fraction) == (1, 10, 1.0)


def test_a_fraction_of_an_epoch_when_not_even_one_fits():
    speed = Speed(step_seconds=0.1, eval_seconds_per_sample=0.001, epoch_overhead=0.1)
    plan = plan_phase(0.6, speed, 10, 100, cap=30)  # 0.4 s left for steps
    assert (plan.epochs, plan.steps) == (1, 4)
    assert plan.fraction == pytest.approx(0.4)
    assert plan_phase(-5.0, speed, 10, 100, cap=30).steps == 1  # a bundle needs a model


def test_the_schedule_shrinks_with_the_epochs():
    cfg = resolve_config("cnn-resnet", sets=["epochs=30", "warmup=3", "patience=10"])
    fitted = fitted_config(cfg, 6, 0)
    assert (fitted.epochs, fitted.warmup, fitted.patience) == (6, pytest.approx(0.6), 2)
    assert fitted_config(cfg, 30, 0).warmup == 3  # nothing to shrink
    assert cfg.epochs == 30  # the asked configuration is left alone


def test_replanning_after_an_epoch_shortens_or_lengthens_once():
    cfg = resolve_config("cnn-small", sets=["epochs=20"])
    planner = BudgetPlanner(TimeBudget(60), cfg)
    # 10 epochs planned, 2 done at 5 s each, 20 s left: 4 more fit, not 8
    assert planner.after_epoch(2, 10, 20, epoch_seconds=5.0, left=20.0) == 6
    # too cautious a plan grows once, up to the cap
    assert planner.after_epoch(2, 6, 20, epoch_seconds=1.0, left=30.0) == 20
    assert planner.after_epoch(3, 20, 20, epoch_seconds=1.0, left=60.0) == 20
    assert planner.after_epoch(4, 8, 20, epoch_seconds=1.0, left=30.0) == 8  # grown already


def test_a_cut_epoch_grows_when_its_steps_are_faster_than_the_probe_said():
    cfg = resolve_config("cnn-small", sets=["epochs=5"])
    planner = BudgetPlanner(TimeBudget(60), cfg)
    planner.planned.append(plan_phase(10.0, Speed(0.5, 0.0, 0.0), 100, 0, 5))
    planner.train_deadline = time.monotonic() + 10.0
    # 5 of 20 steps done at 0.1 s each: 10 s buy 100 more; the epoch has 100 in all
    assert planner.grown_steps(5, 20, 100, step_seconds=0.1) == 100
    assert planner.planned[-1].fraction == 1.0 and planner.replans == 1
    # at 0.5 s a step: 5 + 20 = 25 >= 1.2 x 20, grown to 25
    assert planner.grown_steps(5, 20, 100, step_seconds=0.5) in (24, 25)
    # at 0.6 s a step only 16 more fit: no change for less than a fifth more
    assert planner.grown_steps(5, 20, 100, step_seconds=0.6) == 20


def test_a_resized_one_cycle_ends_at_its_new_length():
    model = torch.nn.Linear(2, 2)
    cfg = resolve_config("cnn-small", sets=["schedule=onecycle", "epochs=10", "lr=0.1"])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = Schedule(opt, cfg, steps=5, epochs=10)
    for _ in range(10):
        opt.step()
        schedule.step_batch()
    schedule.resize(cfg, steps=5, epochs=4, done=10)
    assert schedule.state_dict()["total_steps"] == 20
    for _ in range(9):
        opt.step()
        schedule.step_batch()
    assert opt.param_groups[0]["lr"] < 1e-3  # annealed to (near) zero at step 20 of 20


# --- real training -------------------------------------------------------------------


def budget_fit(mnist_small, sets, **budget):
    x, y, xv, yv = mnist_small
    cfg = resolve_config("cnn-small", sets=["num_threads=1", "schedule=onecycle", *sets])
    torch.manual_seed(0)
    model = create_model("cnn-small", 10)
    started = time.monotonic()
    trainer = Trainer(model, cfg, budget=TimeBudget(cfg.time_limit, started, **budget))
    result = trainer.fit(ArrayBatches((x,), y), ArrayBatches((xv,), yv))
    return trainer, result, time.monotonic() - started


def test_training_stops_on_time_with_its_schedule_fitted(mnist_small):
    # 200 epochs of 512 digits would take minutes; 4 s buy a few
    trainer, result, seconds = budget_fit(mnist_small, ["epochs=200", "time_limit=4"])
    report = result.budget
    assert report is not None
    assert seconds < 4 * 2.5  # generous: shared, noisy machines (see bench_budget.py)
    assert 1 <= report["epochs_planned"] < 200
    assert report["epochs_done"] == len(result.history) <= report["epochs_planned"]
    assert report["samples_per_second"] > 0 and report["time_limit_seconds"] == 4
    assert trainer.cfg.epochs == report["epochs_planned"]  # the config the schedule ran
    assert [round(r["epoch"]) for r in result.history] == list(range(1, len(result.history) + 1))


def test_epochs_stay_a_cap_when_the_budget_is_ample(mnist_small):
    _, result, _ = budget_fit(mnist_small, ["epochs=2", "time_limit=1h"])
    assert result.budget is not None
    assert len(result.history) == 2
    assert result.budget["epochs_planned"] == 2 == result.budget["epochs_cap"]
    assert result.budget["fraction_of_epoch"] == 1.0


def test_a_budget_too_small_for_one_epoch_trains_part_of_one_and_says_so(mnist_small, caplog):
    with caplog.at_level(logging.INFO, logger="imgclass"):
        # reserve ~2 s + evaluation after training: 2.5 s leave no room for a whole epoch
        _, result, seconds = budget_fit(mnist_small, ["epochs=5", "time_limit=2.5"])
    assert result.budget is not None
    assert result.budget["fraction_of_epoch"] < 1
    assert len(result.history) == 1
    assert "fraction of an epoch" in caplog.text
    assert seconds < 2.5 * 4


def test_a_probe_slowed_by_a_busy_machine_does_not_waste_the_budget(mnist_small, caplog):
    """The probe's steps ran while the machine was busy (here: the model sleeps on its
    first training calls), so the plan bought a small part of an epoch; the steps after
    it are fast, and the epoch is given the steps the time left affords."""
    x, y, xv, yv = mnist_small
    cfg = resolve_config(
        "cnn-small", sets=["num_threads=1", "schedule=onecycle", "epochs=3", "batch_size=8",
                           "time_limit=10"],
    )  # fmt: skip
    torch.manual_seed(0)
    model = create_model("cnn-small", 10)
    forward, calls = model.forward, [0]

    def busy_at_first(*args):
        if model.training and calls[0] < 4:
            calls[0] += 1
            time.sleep(0.5)
        return forward(*args)

    model.forward = busy_at_first
    trainer = Trainer(model, cfg, budget=TimeBudget(cfg.time_limit))
    with caplog.at_level(logging.INFO, logger="imgclass"):
        result = trainer.fit(ArrayBatches((x,), y), ArrayBatches((xv,), yv))
    report = result.budget
    assert report is not None
    assert "fraction of an epoch" in caplog.text  # the probe's plan: a cut epoch
    assert "faster than the probe measured" in caplog.text
    assert report["replans"] >= 1
    assert report["steps_done"] > 3 * 8  # far more than the slow probe's plan
    assert report["steps_done"] <= 512 // 8


def test_cli_records_the_budget_in_the_bundle_and_the_mlflow_run(tmp_path, digits_dir, capsys):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "run"
    code = main(["train", "--data", str(digits_dir), "--out", str(out), "--model", "cnn-small",
                 "--time-limit", "20s", "--epochs", "50", "--set", "num_threads=1", "--json"])  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = json.loads((out / "bundle" / "metrics.json").read_text())
    budget = metrics["budget"]
    assert budget == printed["budget"]
    assert budget["time_limit_seconds"] == 20 and budget["epochs_cap"] == 50
    assert 1 <= budget["epochs_done"] <= budget["epochs_planned"] <= 50
    model_json = json.loads((out / "bundle" / "model.json").read_text())
    assert model_json["config"]["time_limit"] == 20
    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    run = MlflowClient().get_run(run_id)
    assert run.data.params["time_limit"] == "20.0"
    assert run.data.metrics["budget_epochs_planned"] == budget["epochs_planned"]
    assert run.data.metrics["budget_seconds_used"] > 0
    assert run.data.tags["imgclass.time_limit"] == "20 s"
    assert "epochs" in run.data.tags["imgclass.budget_bought"]


class Stop(Exception):
    """Stands for the process being killed."""


def test_a_budgeted_run_resumes_under_its_plan(tmp_path, mnist_small):
    x, y, xv, yv = mnist_small
    cfg = resolve_config(
        "cnn-small", sets=["epochs=3", "num_threads=1", "time_limit=1h", "restore_best=false"]
    )

    def run(folder, resume=False, callbacks=(), seed=0):
        torch.manual_seed(seed)
        model = create_model("cnn-small", 10)
        trainer = Trainer(model, cfg, checkpoint_dir=folder, callbacks=callbacks)
        return model, trainer.fit(ArrayBatches((x,), y), ArrayBatches((xv,), yv), resume=resume)

    whole, _ = run(tmp_path / "whole")

    def kill_after_first(epoch, _row):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        run(tmp_path / "killed", callbacks=[kill_after_first])
    saved = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert saved["budget_plan"]["epochs"] == 3
    resumed, result = run(tmp_path / "killed", resume=True, seed=9)
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert result.budget is not None and result.budget["epochs_planned"] == 3


class TwoPhase(torch.nn.Module):
    """cnn-small with a frozen-backbone phase, as transfer models have."""

    def __init__(self) -> None:
        super().__init__()
        self.net = create_model("cnn-small", 10)
        self.head = [m for m in self.net.modules() if isinstance(m, torch.nn.Linear)][-1]

    def forward(self, x):
        return self.net(x)

    def freeze_backbone(self) -> None:
        for p in self.net.parameters():
            p.requires_grad = False
        for p in self.head.parameters():
            p.requires_grad = True

    def unfreeze(self) -> None:
        for p in self.net.parameters():
            p.requires_grad = True


def test_transfer_phases_are_each_planned_from_their_own_speed(mnist_small, caplog):
    x, y, xv, yv = mnist_small
    cfg = resolve_config(
        "cnn-small", sets=["epochs=100", "frozen_epochs=50", "num_threads=1", "time_limit=6"]
    )
    torch.manual_seed(0)
    trainer = Trainer(TwoPhase(), cfg)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="imgclass"):
        result = trainer.fit(ArrayBatches((x,), y), ArrayBatches((xv,), yv))
    assert time.monotonic() - started < 6 * 2.5  # generous, as above
    assert trainer.planner is not None
    assert len(trainer.planner.planned) in (1, 2)  # phase 2 skipped only when out of time
    assert "phase 1:" in caplog.text
    frozen = trainer.cfg.frozen_epochs
    assert 1 <= frozen < 50 and trainer.cfg.epochs < 100
    assert len(result.history) <= trainer.cfg.epochs
