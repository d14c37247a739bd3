"""Comparing tracked runs without a browser: what ``imgclass runs`` lists.

Runs are read from the MLflow store (``mlflow_store.resolve_tracking_uri``), filtered by
dataset and model (the ``imgclass.*`` tags that tracked training sets), sorted by a
metric (missing values last) and shown as a table or JSON. ``mlflow ui`` on the same
store shows the same runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgclass.errors import ConfigError
from imgclass.tables import format_table

DEFAULT_SORT = "test_accuracy"
# Pseudo-metrics every run has; and metrics where lower is better (sorted ascending).
RUN_KEYS = ("start_time", "duration")
LOWER_IS_BETTER = ("loss", "ece", "seconds", "duration")
PAGE = 1000
MAX_RUNS = 20_000


@dataclass
class RunRow:
    """One run as ``imgclass runs`` shows it. start/end: epoch milliseconds (end None while
    running); metrics: the latest value of each metric."""

    run_id: str
    name: str
    experiment: str
    model: str
    dataset: str
    status: str
    start: int
    end: int | None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (None while running)."""
        return (self.end - self.start) / 1000 if self.end else None

    @property
    def epochs(self) -> int | None:
        value = self.metrics.get("epochs")
        return int(value) if value is not None else None

    def value(self, key: str) -> float | None:
        """A metric, or a pseudo-metric of RUN_KEYS, for sorting."""
        if key == "start_time":
            return float(self.start)
        if key == "duration":
            return self.duration
        return self.metrics.get(key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "name": self.name,
            "experiment": self.experiment,
            "model": self.model,
            "dataset": self.dataset,
            "dataset_path": self.tags.get("imgclass.dataset_path"),
            "status": self.status,
            "start_time": iso_time(self.start),
            "duration_seconds": self.duration,
            "epochs": self.epochs,
            "test_accuracy": self.metrics.get("test_accuracy"),
            "test_top3_accuracy": self.metrics.get("test_top3_accuracy"),
            "parent_run_id": self.tags.get("mlflow.parentRunId"),
            "metrics": self.metrics,
        }


def iso_time(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def store_exists(uri: str) -> bool:
    """False for a SQLite store whose database file is not there yet (listing must not
    create one); True for every other store."""
    from imgclass.experiments.mlflow_store import sqlite_path

    db = sqlite_path(uri)
    return db is None or db.is_file()


def experiment_names(client: Any, name: str | None) -> dict[str, str]:
    """{experiment id: name} of the experiment called ``name``, or of all active ones.
    ConfigError naming the existing experiments when ``name`` is unknown."""
    experiments = client.search_experiments()
    if name is None:
        return {e.experiment_id: e.name for e in experiments}
    found = [e for e in experiments if e.name == name]
    if not found:
        have = ", ".join(sorted(e.name for e in experiments)) or "none"
        raise ConfigError(f"--experiment {name}: no such experiment (experiments: {have})")
    return {found[0].experiment_id: found[0].name}


def fetch_runs(client: Any, experiments: dict[str, str]) -> list[RunRow]:
    """Every active run of ``experiments`` (page by page, at most MAX_RUNS)."""
    rows: list[RunRow] = []
    token = None
    while len(rows) < MAX_RUNS:
        page = client.search_runs(list(experiments), max_results=PAGE, page_token=token)
        rows.extend(to_row(run, experiments) for run in page)
        token = page.token
        if not token:
            break
    return rows


def to_row(run: Any, experiments: dict[str, str]) -> RunRow:
    tags = dict(run.data.tags)
    return RunRow(
        run_id=run.info.run_id,
        name=run.info.run_name or tags.get("mlflow.runName", ""),
        experiment=experiments.get(run.info.experiment_id, run.info.experiment_id),
        model=tags.get("imgclass.model", ""),
        dataset=tags.get("imgclass.dataset", ""),
        status=run.info.status,
        start=int(run.info.start_time or 0),
        end=int(run.info.end_time) if run.info.end_time else None,
        metrics=dict(run.data.metrics),
        tags=tags,
    )


def matches(row: RunRow, data: str | None, model: str | None) -> bool:
    """Whether a run is of dataset ``data`` (its folder name, or its path when ``data``
    is an existing folder) and of model ``model``."""
    if model is not None and row.model != model:
        return False
    if data is None:
        return True
    if Path(data).is_dir():
        return row.tags.get("imgclass.dataset_path") == str(Path(data).resolve())
    return row.dataset == data


def descending(metric: str) -> bool:
    """Higher is better unless the name says loss, ece, seconds or duration."""
    return not any(word in metric for word in LOWER_IS_BETTER)


def known_metrics() -> set[str]:
    """Metrics imgclass's own runs log (``tracking.final_metrics`` and the per-epoch
    rows of the trainer): a run that has not finished yet may lack any of them."""
    from imgclass.experiments.tracking import SUMMARY_KEYS

    summary = {f"{split}_{key}" for split in ("valid", "test") for key in SUMMARY_KEYS}
    epochs = {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    totals = {"train_seconds", "total_seconds", "best_epoch", "epochs", "holdout_accuracy"}
    return (
        summary | epochs | totals | {"samples_per_second", "cv_accuracy", "objective", "best_value"}
    )


def sort_runs(rows: list[RunRow], metric: str, reverse: bool = False) -> list[RunRow]:
    """Best first by ``metric`` (``reverse``: worst first); runs without it last, newest
    first. A metric no run has yet (none finished, or none logs it) lists the runs
    newest first (``missing_metric_note`` says why); ConfigError listing the available
    metrics only for a name that neither the runs nor imgclass know (a typo)."""
    available = sorted({k for r in rows for k in r.metrics} | set(RUN_KEYS))
    if rows and metric not in available and metric not in known_metrics():
        raise ConfigError(
            f"--sort {metric}: no run has this metric; available: {', '.join(available)}"
        )
    down = descending(metric) != reverse
    have = [r for r in rows if r.value(metric) is not None]
    missing = [r for r in rows if r.value(metric) is None]
    have.sort(key=lambda r: -r.start)
    have.sort(key=lambda r: float(r.value(metric) or 0.0), reverse=down)
    missing.sort(key=lambda r: -r.start)
    return have + missing


def missing_metric_note(rows: list[RunRow], metric: str) -> str | None:
    """Why the listed runs are not ordered by ``metric``, when none of them has it."""
    if not rows or any(r.value(metric) is not None for r in rows):
        return None
    unfinished = sum(r.status == "RUNNING" for r in rows)
    why = f" ({unfinished} still running: a run records it when it finishes)" if unfinished else ""
    return f"no listed run has {metric} yet{why}; newest first"


def list_runs(
    uri: str | None = None,
    *,
    data: str | None = None,
    model: str | None = None,
    experiment: str | None = None,
    sort: str = DEFAULT_SORT,
    limit: int | None = 20,
    reverse: bool = False,
) -> list[RunRow]:
    """The runs of the store at ``uri`` (resolved as for training) that match, sorted by
    ``sort`` and cut to ``limit`` (None = all). [] when the store does not exist yet."""
    from imgclass.experiments.mlflow_store import resolve_tracking_uri, store_error

    resolved = resolve_tracking_uri(uri)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    if not store_exists(resolved):
        return []
    from imgclass.experiments.mlflow_store import import_mlflow

    import_mlflow()
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=resolved)
        experiments = experiment_names(client, experiment)
        rows = fetch_runs(client, experiments) if experiments else []
    except ConfigError:
        raise
    except Exception as exc:  # MlflowException, SQLAlchemy, connection errors
        raise store_error(resolved, exc) from exc
    rows = [r for r in rows if matches(r, data, model)]
    ordered = sort_runs(rows, sort, reverse)
    return ordered[:limit] if limit is not None else ordered


# --- the table -----------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h07m``; ``-`` while running."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def table_rows(rows: list[RunRow], sort: str) -> tuple[list[str], list[list[str]]]:
    """Header and cells: name, model, dataset, status, start, duration, test accuracy,
    top-3, epochs, run id (and the sort metric when it is another one)."""
    head = ["run", "model", "dataset", "status", "started", "time", "test acc", "top-3"]
    extra = sort not in ("test_accuracy", "test_top3_accuracy", *RUN_KEYS)
    head += [sort] if extra else []
    head += ["epochs", "run id"]
    cells = []
    for r in rows:
        line = [
            r.name[:48],
            r.model,
            r.dataset,
            r.status,
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.start / 1000)),
            format_duration(r.duration),
            _number(r.metrics.get("test_accuracy")),
            _number(r.metrics.get("test_top3_accuracy")),
        ]
        line += [_number(r.metrics.get(sort))] if extra else []
        line += ["-" if r.epochs is None else str(r.epochs), r.run_id[:8]]
        cells.append(line)
    return head, cells


def runs_table(rows: list[RunRow], sort: str = DEFAULT_SORT) -> str:
    """A plain-text table, numbers right-aligned."""
    head, cells = table_rows(rows, sort)
    numeric = {i for i, h in enumerate(head) if h in ("time", "test acc", "top-3", "epochs", sort)}
    return format_table(head, cells, right=numeric, rule=True)
