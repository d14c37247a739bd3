"""Hyperparameter search with Optuna: the engine behind ``imgclass tune``.

A study searches one model family's registered search space
(``model_info(name).search_space``: ``fn(trial) -> {"lr": ..., "model.dropout": ...,
"augment.rotation": ...}``, keys as ``--set`` takes them). Each trial resolves a full
``TrainConfig`` (family defaults, ``--config``, the trial's suggestions, then the fixed
``--set`` overrides, which win) and trains it through ``imgclass.train.run.train``.

- Objective: the validation accuracy of the model each trial keeps (the dataset's valid
  split, measured through the bundle, or a held-out share of the training split when
  there is none), maximised. The test split stays out of the search: test metrics are
  only recorded as trial attributes.
- Sampling: TPE, seeded. Pruning: torch trials report their per-epoch validation
  accuracy; a median or hyperband pruner stops the bad ones (pca-svm has no epochs:
  nothing to prune).
- Storage: an SQLite database (``<out>/optuna.db`` by default). Opening an existing
  study resumes it: COMPLETE and PRUNED trials count towards ``trials`` (the total
  wanted), and trials a killed process left RUNNING are marked FAIL. One process per
  study at a time. A study belongs to one dataset (its manifest hash), model, search
  space and set of fixed settings: resuming it with any of them changed is refused
  (``tuning_identity``).
- Tracking: the study is an MLflow parent run (resumed with the study), each trial a
  nested run tagged ``imgclass.trial`` and ``imgclass.study``; a pruned trial's run ends
  KILLED with the tag ``imgclass.pruned=true``.
- Outputs in ``out``: ``best.yaml`` (the best trial's configuration, for
  ``imgclass train --config``), ``history.png``, ``importance.png`` and the best trial's
  run folder ``trial-<n>/`` with its bundle (other trials' folders are removed; their
  bundles stay in MLflow when tracking is on).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgclass import atomic
from imgclass.errors import ConfigError, ImgclassError, ModelError

if TYPE_CHECKING:
    import optuna

    from imgclass.models.registry import ModelInfo
    from imgclass.train.config import TrainConfig

log = logging.getLogger(__name__)

PRUNERS = ("median", "hyperband", "none")
OBJECTIVE = "val_accuracy"
# Trial errors that say "this combination does not work" (a bad setting, NaNs, too many
# PCA components): recorded as FAIL and the search goes on. Anything else is a bug.
TRIAL_ERRORS = (ImgclassError, RuntimeError, ValueError, ArithmeticError)


@dataclass
class TuneSettings:
    """What ``imgclass tune`` was asked for (None: the default described here).

    model: default as ``imgclass train`` (by the data). study: ``<model>-<dataset>``.
    out: ``work/tune/<study>``. storage: ``sqlite:///<out>/optuna.db``. trials: the total
    of finished (complete or pruned) trials wanted, earlier runs of the study included.
    timeout: seconds after which no new trial starts. time_limit: seconds the whole
    search may take: each trial trains under a time budget of its share of what is left
    (``imgclass.train.budget``), and no trial starts once too little is left for one.
    epochs: per trial (the family's
    default otherwise). startup_trials / warmup_epochs: the median pruner prunes nothing
    before that many trials have completed, nor in a trial's first epochs.
    sets / config: fixed settings for every trial (``--set`` wins over the search).
    max_failures: consecutive failed trials after which the search gives up.
    """

    data: Path
    model: str | None = None
    trials: int = 20
    timeout: float | None = None
    time_limit: float | None = None
    study: str | None = None
    out: Path | None = None
    storage: str | None = None
    pruner: str = "median"
    startup_trials: int = 2
    warmup_epochs: int = 1
    epochs: int | None = None
    seed: int = 0
    sets: list[str] = field(default_factory=list)
    config: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    track: bool = True
    max_failures: int = 3


@dataclass
class Plan:
    """The settings resolved against the data: names, places and fixed overrides."""

    settings: TuneSettings
    model: str
    info: ModelInfo
    study: str
    out: Path
    storage: str
    auto_sets: list[str]
    epochs: int
    recipe: dict[str, Any] | None = None  # the dataset's, which settles augment "auto"


@dataclass
class TrialReport:
    """One finished trial, as the progress line shows it."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    seconds: float
    epochs: int
    error: str | None = None

    def line(self, best: float | None) -> str:
        """``trial 3 COMPLETE val_accuracy 0.8123 (best 0.8123) 12 s lr=0.001 ...``."""
        score = f"{OBJECTIVE} {self.value:.4f}" if self.value is not None else "no score"
        if self.state == "PRUNED":
            score += f" after {self.epochs} epoch{'s' * (self.epochs != 1)}"
        shown = " ".join(f"{k}={_short(v)}" for k, v in self.params.items())
        best_text = f" (best {best:.4f})" if best is not None else ""
        error = f" [{self.error}]" if self.error else ""
        return (
            f"trial {self.number} {self.state} {score}{best_text} "
            f"{self.seconds:.0f} s {shown}{error}"
        )


@dataclass
class TuneResult:
    """What a search ended with (``--json`` prints ``to_dict()``)."""

    study: str
    model: str
    storage: str
    out: Path
    best_value: float | None
    best_trial: int | None
    best_params: dict[str, Any]
    counts: dict[str, int]
    ran: int
    stale_failed: int
    best_config: Path | None
    best_bundle: Path | None
    history_plot: Path | None
    importance_plot: Path | None
    parent_run_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --- planning ------------------------------------------------------------------------


def mentioned_keys(settings: TuneSettings) -> set[str]:
    """Top-level keys the user fixed through ``--config`` or ``--set``."""
    from imgclass.train.config import read_config_file, split_sets

    keys = set(read_config_file(settings.config)) if settings.config else set()
    keys |= {k.partition(".")[0] for k, _ in split_sets(settings.sets)}
    return keys


def make_plan(settings: TuneSettings) -> Plan:
    """Resolve model, study, folders and storage; check the fixed settings once, so a
    typo fails now rather than in every trial."""
    from imgclass.data.store import PreparedDataset
    from imgclass.models import model_info
    from imgclass.train.config import resolve_config
    from imgclass.train.run import default_model

    if settings.trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {settings.trials}")
    if settings.timeout is not None and settings.timeout <= 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {settings.timeout}")
    if settings.time_limit is not None:
        from imgclass.train.budget import parse_duration

        settings.time_limit = parse_duration(settings.time_limit, "--time-limit")
    if settings.startup_trials < 0 or settings.warmup_epochs < 0:
        raise ConfigError("--startup-trials and --warmup-epochs must not be negative")
    if settings.pruner not in PRUNERS:
        raise ConfigError(f"--pruner must be one of {', '.join(PRUNERS)}, got {settings.pruner!r}")
    data = Path(settings.data)
    with PreparedDataset.open(data) as ds:
        fallback = default_model(ds)
        has_valid = "valid" in ds.splits
        recipe = ds.recipe
    base = resolve_config(
        settings.model, settings.config, settings.sets, fallback_model=fallback,
        recipe=recipe, epochs=settings.epochs, seed=settings.seed,
    )  # fmt: skip
    info = model_info(base.model)
    if info.search_space is None:
        raise ConfigError(f"{base.model} declares no search space: nothing to tune")
    auto = auto_sets(settings, info, base, has_valid, data)
    study = settings.study or f"{base.model}-{data.resolve().name}"
    out = (
        Path(settings.out)
        if settings.out
        else Path("work") / "tune" / atomic.safe_name(study, "study")
    )
    storage = settings.storage or f"sqlite:///{(out / 'optuna.db').resolve()}"
    return Plan(settings, base.model, info, study, out, storage, auto, base.epochs, recipe)


def auto_sets(
    settings: TuneSettings, info: ModelInfo, base: TrainConfig, has_valid: bool, data: Path
) -> list[str]:
    """Settings tuning needs unless the user chose otherwise: keep the epoch with the best
    validation accuracy (what the search maximises), and a validation share of the
    training split when the dataset has no valid split."""
    mentioned = mentioned_keys(settings)
    out = [] if "monitor" in mentioned else [f"monitor={OBJECTIVE}"]
    if has_valid or base.val_fraction > 0:
        return out
    if info.framework == "sklearn":
        raise ConfigError(
            f"{data} has no valid split to score {info.name} trials on; prepare the dataset "
            "with one (imgclass data prepare ... --split 80/10/10)"
        )
    log.info("%s has no valid split: each trial holds out 10%% of the training split", data)
    return [*out, "val_fraction=0.1"]


# --- the study -----------------------------------------------------------------------


def make_pruner(kind: str, startup_trials: int, warmup_epochs: int, epochs: int) -> Any:
    """median: prune a trial whose epoch score is below the median of earlier trials at
    that epoch, after ``startup_trials`` completed trials and past ``warmup_epochs``;
    hyperband: successive halving over 1..epochs; none: never prune."""
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs + 1
        )
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    return optuna.pruners.NopPruner()


def open_study(settings: TuneSettings, plan: Plan | None = None) -> optuna.Study:
    """The study in its storage, created or loaded (``load_if_exists``), with a TPE
    sampler seeded by ``seed`` plus the number of earlier trials (so a resumed study does
    not replay its first suggestions). ConfigError for a study of another model."""
    import optuna

    plan = plan or make_plan(settings)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # imgclass prints its own lines
    if plan.storage.startswith("sqlite:///"):
        plan.out.mkdir(parents=True, exist_ok=True)
        Path(plan.storage[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    try:
        study = optuna.create_study(
            storage=plan.storage,
            study_name=plan.study,
            direction="maximize",
            load_if_exists=True,
            pruner=make_pruner(
                settings.pruner, settings.startup_trials, settings.warmup_epochs, plan.epochs
            ),
        )
    except Exception as exc:  # SQLAlchemy / Optuna storage errors alike
        raise ConfigError(f"study storage {plan.storage}: {str(exc).splitlines()[0]}") from exc
    check_study(study, plan)
    startup = min(10, max(2, settings.trials // 3))
    study.sampler = optuna.samplers.TPESampler(
        seed=settings.seed + len(study.trials), n_startup_trials=startup
    )
    return study


def check_study(study: optuna.Study, plan: Plan) -> None:
    """A study holds one search: one model family on one dataset, one search space and
    one set of fixed settings (``tuning_identity``). A new study records them; resuming
    a study whose record differs is refused, with how to start a new study instead."""
    import optuna

    from imgclass.experiments.tuning_identity import check_identity

    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ConfigError(f"study {plan.study!r} in {plan.storage} is not an imgclass search")
    check_identity(study, plan)


def fail_stale(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a killed process as FAIL; how many there were."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    if stale:
        numbers = ", ".join(str(t.number) for t in stale)
        log.warning(
            "resuming study %r: trial(s) %s were left running by an interrupted run; "
            "marked failed (they do not count towards --trials)",
            study.study_name,
            numbers,
        )
    return len(stale)


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials per state: complete, pruned, failed, running."""
    out = {"complete": 0, "pruned": 0, "failed": 0, "running": 0}
    names = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}
    for trial in study.get_trials(deepcopy=False):
        key = names.get(trial.state.name)
        if key:
            out[key] += 1
    return out


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The completed trial with the highest value, or None when none completed."""
    try:
        return study.best_trial
    except ValueError:
        return None


# --- one trial -----------------------------------------------------------------------


def as_sets(overrides: dict[str, Any]) -> list[str]:
    """``{"lr": 0.001, "model.gamma": "scale"}`` -> ``["lr=0.001", 'model.gamma="scale"']``
    (values as JSON, which ``--set`` reads as YAML)."""
    return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]


def trial_config(plan: Plan, overrides: dict[str, Any]) -> TrainConfig:
    """The trial's TrainConfig: automatic settings, the suggestions, then ``--set``."""
    from imgclass.train.config import resolve_config

    s = plan.settings
    return resolve_config(
        plan.model, s.config, [*plan.auto_sets, *as_sets(overrides), *s.sets],
        recipe=plan.recipe, epochs=s.epochs, seed=s.seed,
    )  # fmt: skip


def pruning_callback(trial: optuna.Trial, epochs: int) -> Callable[[int, dict[str, float]], None]:
    """For ``train(callbacks=...)``: report each epoch's validation accuracy; raise
    ``TrialPruned`` when the pruner says this trial is not worth finishing. The last
    epoch is never pruned: its cost is paid, and a complete trial informs the search."""
    import optuna

    def report(epoch: int, row: dict[str, float]) -> None:
        if OBJECTIVE not in row:
            return
        trial.report(float(row[OBJECTIVE]), epoch)
        trial.set_user_attr("epochs", epoch)
        if epoch < epochs and trial.should_prune():
            raise optuna.TrialPruned(f"{OBJECTIVE} {row[OBJECTIVE]:.4f} at epoch {epoch}")

    return report


def objective_value(metrics: dict[str, Any]) -> float:
    """Validation accuracy of the kept model: the bundle's score on the valid split, the
    held-out share's, or the best epoch's; ModelError when the run had no validation."""
    for value in (
        (metrics.get("valid") or {}).get("accuracy"),
        (metrics.get("holdout") or {}).get("accuracy"),
        max((r[OBJECTIVE] for r in metrics.get("history") or [] if OBJECTIVE in r), default=None),
    ):
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    raise ModelError("the trial has no validation score (no valid split nor holdout)")


def record_outcome(trial: optuna.Trial, metrics: dict[str, Any], seconds: float) -> None:
    """Test metrics and timings as user attributes (never the objective)."""
    test = metrics.get("test") or {}
    for key in ("accuracy", "top3_accuracy"):
        if isinstance(test.get(key), int | float):
            trial.set_user_attr(f"test_{key}", float(test[key]))
    trial.set_user_attr("epochs", len(metrics.get("history") or []))
    trial.set_user_attr("seconds", round(seconds, 2))


def run_trial(trial: optuna.Trial, plan: Plan, share: float | None = None) -> float:
    """Train one suggestion; its validation accuracy (raises TrialPruned when pruned).
    share: the trial's time budget in seconds (under ``--time-limit``)."""
    from imgclass.experiments.tracking import track_training
    from imgclass.train.run import train

    started = time.monotonic()
    space = plan.info.search_space
    if space is None:  # make_plan refuses such models; this keeps the types honest
        raise ConfigError(f"{plan.model} declares no search space")
    overrides = fixed_removed(space(trial), plan.settings.sets)
    cfg = trial_config(plan, overrides)
    trial.set_user_attr("config", cfg.to_dict())  # before train() adds data-derived args
    if share is not None:  # the trial's share of the search's budget (not in best.yaml)
        cfg.time_limit = min(cfg.time_limit or share, share)
        trial.set_user_attr("time_limit", round(cfg.time_limit, 2))
    run_dir = plan.out / f"trial-{trial.number}"
    shutil.rmtree(run_dir, ignore_errors=True)
    trial.set_user_attr("run_dir", str(run_dir))
    s = plan.settings
    with track_training(
        cfg,
        Path(s.data),
        run_dir,
        uri=s.tracking_uri,
        experiment=s.experiment,
        run_name=f"{plan.study}-trial-{trial.number}",
        nested=True,
        tags={"imgclass.trial": str(trial.number), "imgclass.study": plan.study},
        enabled=s.track,
    ) as tracker:
        if tracker.run_id:
            trial.set_user_attr("mlflow_run_id", tracker.run_id)
        outcome = train(
            s.data,
            run_dir,
            cfg,
            callbacks=[tracker.callback, pruning_callback(trial, cfg.epochs)],
            clock_start=started,
            reserve=TRIAL_TRACKING_SECONDS if tracker.enabled else 0.0,
        )
        value = objective_value(outcome.metrics)
        tracker.log_metrics({"objective": value})
        tracker.finish(outcome, pictures=False)
    record_outcome(trial, outcome.metrics, time.monotonic() - started)
    return value


def fixed_removed(overrides: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """The suggestions minus the keys ``--set`` fixes (it would override them anyway)."""
    from imgclass.train.config import split_sets

    fixed = {k for k, _ in split_sets(sets)}
    return {k: v for k, v in overrides.items() if k not in fixed}


def ask_and_run(study: optuna.Study, plan: Plan, share: float | None = None) -> TrialReport:
    """One trial through ask/tell: COMPLETE, PRUNED or FAIL (a TRIAL_ERRORS error). An
    interrupt marks the trial FAIL and propagates; so does any other error. share: the
    trial's time budget (seconds), under ``--time-limit``."""
    import optuna
    from optuna.trial import TrialState

    trial = study.ask()
    started = time.perf_counter()
    value: float | None = None
    error: str | None = None
    try:
        value = run_trial(trial, plan, share)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    except TRIAL_ERRORS as exc:
        error = f"{type(exc).__name__}: {exc}"
        trial.set_user_attr("error", error[:2000])
        study.tell(trial, state=TrialState.FAIL)
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    else:
        study.tell(trial, value)
    frozen = study.get_trials(deepcopy=False)[trial.number]
    return TrialReport(
        trial.number,
        frozen.state.name,
        value if value is not None else frozen.value,
        dict(frozen.params),
        time.perf_counter() - started,
        int(frozen.user_attrs.get("epochs", 0)),
        error,
    )


def tidy_folders(study: optuna.Study, out: Path) -> Path | None:
    """Keep the best trial's run folder (minus its checkpoints); remove the others of
    finished trials. Returns the best trial's bundle folder, if any."""
    best = best_trial(study)
    for trial in study.get_trials(deepcopy=False):
        if trial.state.is_finished() and (best is None or trial.number != best.number):
            shutil.rmtree(out / f"trial-{trial.number}", ignore_errors=True)
    if best is None:
        return None
    shutil.rmtree(out / f"trial-{best.number}" / "checkpoints", ignore_errors=True)
    bundle = out / f"trial-{best.number}" / "bundle"
    return bundle if bundle.is_dir() else None


# --- the search ----------------------------------------------------------------------


def finished(study: optuna.Study) -> int:
    """Trials that count towards ``--trials``: complete and pruned ones."""
    c = counts(study)
    return c["complete"] + c["pruned"]


def run_trials(
    study: optuna.Study,
    plan: Plan,
    on_trial: Callable[[TrialReport], None] | None,
    log_value: Callable[[TrialReport], None],
) -> int:
    """Trials until ``trials`` are finished, the timeout passes or ``max_failures``
    trials in a row fail (ModelError then). Returns how many trials ran."""
    from imgclass.progress import progress
    from imgclass.text import plural

    s = plan.settings
    deadline = time.monotonic() + s.timeout if s.timeout else math.inf
    budget = SearchBudget(s.time_limit) if s.time_limit else None
    missing = s.trials - finished(study)
    if missing <= 0:
        log.info("study %r already has %d finished trials", plan.study, finished(study))
        return 0
    ran = failures = 0
    with progress(total=missing, desc="trials", unit="trial") as bar:
        while finished(study) < s.trials and time.monotonic() < deadline:
            share = budget.share(s.trials - finished(study)) if budget else None
            if budget is not None and share is None:
                break
            report = ask_and_run(study, plan, share)
            ran += 1
            best = best_trial(study)
            log.info("%s", report.line(best.value if best else None))
            log_value(report)
            if on_trial:
                on_trial(report)
            tidy_folders(study, plan.out)
            failures = failures + 1 if report.state == "FAIL" else 0
            if failures >= s.max_failures:
                raise ModelError(
                    f"{plural(failures, 'trial')} in a row failed; the last: {report.error} "
                    f"(check --set/--config; the study is kept in {plan.storage})"
                )
            bar.update(int(report.state != "FAIL"))
    if time.monotonic() >= deadline and finished(study) < s.trials:
        log.info("--timeout reached: no new trial started after %.0f s", s.timeout)
    return ran


# What a trial's tracking costs after its bundle (no pictures), kept out of its share.
TRIAL_TRACKING_SECONDS = 2.0


class SearchBudget:
    """``--time-limit`` of a search: each trial's share of the time left, and when to
    start no more. The search's own end (best.yaml, plots, MLflow) is kept out of it."""

    END_SECONDS = 3.0  # best.yaml, history.png, importance.png, the parent run
    END_SHARE = 0.02
    MIN_TRIAL_SECONDS = 5.0  # less is not enough for a trial to train anything

    def __init__(self, seconds: float, started: float | None = None) -> None:
        self.seconds = seconds
        self.started = time.monotonic() if started is None else started
        self.end = self.started + seconds - self.END_SECONDS - self.END_SHARE * seconds

    def share(self, trials_left: int) -> float | None:
        """Seconds for the next trial (what is left shared among the trials still
        wanted), or None when too little is left to start one."""
        left = self.end - time.monotonic()
        if left < self.MIN_TRIAL_SECONDS:
            log.info(
                "--time-limit: no new trial started (%.0f s of %.0f s left)",
                max(0.0, self.started + self.seconds - time.monotonic()),
                self.seconds,
            )
            return None
        # fewer trials than wanted fit when their shares would be too small to train
        return min(left, max(self.MIN_TRIAL_SECONDS, left / max(1, trials_left)))


def tune(
    settings: TuneSettings, on_trial: Callable[[TrialReport], None] | None = None
) -> TuneResult:
    """Run (or resume) the search that ``settings`` describe; write its outputs.

    on_trial: called with each finished trial's report (the CLI prints nothing more:
    progress lines go to the log).
    """
    plan = make_plan(settings)
    study = open_study(settings, plan)
    stale = fail_stale(study)
    with parent_run(study, plan) as parent:
        ran = run_trials(study, plan, on_trial, parent.log_trial)
        result = write_outputs(study, plan, ran, stale, parent.run_id)
        parent.finish(result)
    return result


# --- the MLflow parent run -----------------------------------------------------------


class ParentRun:
    """The study's MLflow run (a no-op when tracking is off)."""

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id

    def log_trial(self, report: TrialReport) -> None:
        """Each completed trial's value as the metric ``trial_value`` at step = number."""
        if self.run_id is None or report.value is None or report.state != "COMPLETE":
            return
        import mlflow

        mlflow.log_metric("trial_value", report.value, step=report.number)

    def finish(self, result: TuneResult) -> None:
        """Counts, the best value and trial, and the outputs as artifacts."""
        if self.run_id is None:
            return
        import mlflow

        mlflow.log_metrics({f"trials_{k}": float(v) for k, v in result.counts.items()})
        if result.best_value is not None:
            mlflow.log_metric("best_value", result.best_value)
            mlflow.set_tag("imgclass.best_trial", str(result.best_trial))
        for path in (result.best_config, result.history_plot, result.importance_plot):
            if path is not None and path.is_file():
                mlflow.log_artifact(str(path))


@contextmanager
def parent_run(study: optuna.Study, plan: Plan) -> Iterator[ParentRun]:
    """Start the study's parent run, or resume the one an earlier run of the study made
    in the same store; it ends FINISHED, FAILED on an error, KILLED on Ctrl-C."""
    s = plan.settings
    if not s.track:
        yield ParentRun()
        return
    from imgclass.experiments.mlflow_store import configure
    from imgclass.experiments.tracking import failure_status

    uri = configure(s.tracking_uri, s.experiment)
    import mlflow

    run = resume_parent(study, uri)
    if run is None:
        run = mlflow.start_run(run_name=f"tune-{plan.study}", tags=parent_tags(plan))
        mlflow.log_params(parent_params(plan))
        study.set_user_attr("mlflow_parent_run_id", run.info.run_id)
        study.set_user_attr("mlflow_tracking_uri", uri)
    mlflow.set_tag("imgclass.trials_wanted", str(s.trials))
    try:
        yield ParentRun(run.info.run_id)
    except BaseException as exc:
        mlflow.end_run(status=failure_status(exc))
        raise
    mlflow.end_run(status="FINISHED")


def resume_parent(study: optuna.Study, uri: str) -> Any:
    """The earlier parent run of this study in this store, started again; else None."""
    import mlflow

    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if not run_id or study.user_attrs.get("mlflow_tracking_uri") != uri:
        return None
    try:
        return mlflow.start_run(run_id=run_id)
    except Exception as exc:  # deleted run, other experiment: start a new one
        log.info("not resuming MLflow run %s (%s): starting a new one", run_id, exc)
        return None


def parent_tags(plan: Plan) -> dict[str, str]:
    return {
        "imgclass.kind": "tune",
        "imgclass.study": plan.study,
        "imgclass.model": plan.model,
        "imgclass.family": plan.info.family,
        "imgclass.dataset": Path(plan.settings.data).resolve().name,
        "imgclass.dataset_path": str(Path(plan.settings.data).resolve()),
    }


def parent_params(plan: Plan) -> dict[str, str]:
    s = plan.settings
    return {
        "study": plan.study,
        "model": plan.model,
        "storage": plan.storage,
        "pruner": s.pruner,
        "sampler": "tpe",
        "seed": str(s.seed),
        "epochs_per_trial": str(plan.epochs),
        "time_limit": str(s.time_limit or 0),
        "fixed_sets": json.dumps(s.sets)[:6000],
        "config": str(s.config or ""),
    }


# --- outputs -------------------------------------------------------------------------


def write_outputs(
    study: optuna.Study, plan: Plan, ran: int, stale: int, parent_id: str | None
) -> TuneResult:
    """best.yaml, history.png and importance.png in ``out``; the result to report."""
    from imgclass.experiments.tuning_plots import plot_history, plot_importance

    best = best_trial(study)
    bundle = tidy_folders(study, plan.out)
    config = write_best_config(best, plan) if best is not None else None
    if best is None:
        log.warning("no trial of study %r has completed: no best.yaml", plan.study)
    history = plot_history(study, plan.out / "history.png")
    importance = plot_importance(study, plan.out / "importance.png")
    return TuneResult(
        study=plan.study,
        model=plan.model,
        storage=plan.storage,
        out=plan.out,
        best_value=best.value if best else None,
        best_trial=best.number if best else None,
        best_params=dict(best.params) if best else {},
        counts=counts(study),
        ran=ran,
        stale_failed=stale,
        best_config=config,
        best_bundle=bundle,
        history_plot=history,
        importance_plot=importance,
        parent_run_id=parent_id,
    )


def write_best_config(best: optuna.trial.FrozenTrial, plan: Plan) -> Path:
    """``out/best.yaml``: the best trial's full configuration, checked by reading it
    back through ``resolve_config`` before it replaces any earlier one."""
    import yaml

    from imgclass.train.config import resolve_config, save_config

    path = plan.out / "best.yaml"
    with atomic.replacing(path) as tmp:
        tmp.write_text(yaml.safe_dump(best.user_attrs["config"], sort_keys=False))
        cfg = resolve_config(None, tmp)  # raises ConfigError if it does not read back
        save_config(cfg, tmp)
        header = (
            f"# best trial {best.number} of study {plan.study}: {OBJECTIVE} {best.value:.4f}\n"
            f"# imgclass train --data {plan.settings.data} --out RUNDIR --config {path}\n"
        )
        tmp.write_text(header + tmp.read_text())
    return path
