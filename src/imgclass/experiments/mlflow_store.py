"""The MLflow store that tracking, tuning, the run list and the model registry share.

Where runs and registered models live: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``,
else ``sqlite:///<cwd>/work/mlflow/mlflow.db`` (``resolve_tracking_uri``). A
``sqlite:///DIR/NAME.db`` store keeps its artifacts in ``DIR/artifacts``
(``artifact_root``), so a store is one folder that can be moved or deleted.
``configure`` points mlflow's tracking and registry at a store and selects an
experiment (``ensure_experiment``); ``store_error`` turns a store's failure into a
one-line ConfigError. mlflow itself is imported only through ``import_mlflow``, which
keeps its telemetry off and its log quiet.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType

from imgclass.atomic import safe_name
from imgclass.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_DIR = Path("work") / "mlflow"
DEFAULT_EXPERIMENT = "imgclass"


def default_tracking_uri() -> str:
    """``sqlite:///<absolute cwd>/work/mlflow/mlflow.db``."""
    return f"sqlite:///{(DEFAULT_DIR / 'mlflow.db').resolve()}"


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """The store to use: ``explicit`` (``--tracking-uri``) > ``$MLFLOW_TRACKING_URI`` >
    the default SQLite store under ``work/mlflow``."""
    for candidate in (explicit, os.environ.get("MLFLOW_TRACKING_URI")):
        if candidate and candidate.strip():
            return candidate.strip()
    return default_tracking_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///...`` URI (None for other stores)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def artifact_root(uri: str) -> Path | None:
    """Where a SQLite store keeps its artifacts: ``artifacts/`` beside the database (so
    the default store's are in ``work/mlflow/artifacts``). None for other stores, whose
    server or file layout decides."""
    db = sqlite_path(uri)
    return db.resolve().parent / "artifacts" if db is not None else None


def import_mlflow() -> ModuleType:
    """mlflow, imported with its telemetry off (runs stay on this machine)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    import mlflow

    # mlflow logs its own INFO lines (database creation, ...): only with --debug
    debug = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    logging.getLogger("mlflow").setLevel(logging.DEBUG if debug else logging.WARNING)
    return mlflow


def configure(uri: str | None = None, experiment: str | None = None) -> str:
    """Point mlflow (tracking and model registry) at the store and select ``experiment``
    (default ``imgclass``), creating it, with its artifacts under ``artifact_root``, if
    needed. Returns the resolved URI; ConfigError when the store cannot be opened."""
    resolved = resolve_tracking_uri(uri)
    mlflow = import_mlflow()
    db = sqlite_path(resolved)
    if db is not None:
        db.resolve().parent.mkdir(parents=True, exist_ok=True)
    try:  # always select one, so runs never land in MLflow's "Default"
        mlflow.set_tracking_uri(resolved)
        mlflow.set_registry_uri(resolved)
        experiment_id = ensure_experiment(experiment or DEFAULT_EXPERIMENT, resolved)
        mlflow.set_experiment(experiment_id=experiment_id)
    except Exception as exc:  # MlflowException, SQLAlchemy and connection errors alike
        raise store_error(resolved, exc) from exc
    return resolved


def store_error(uri: str, exc: BaseException) -> ConfigError:
    """A one-line ConfigError for a store that failed (first line of mlflow's message)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return ConfigError(
        f"tracking store {uri}: {first} (check --tracking-uri / MLFLOW_TRACKING_URI, "
        "or train with --no-track)"
    )


def ensure_experiment(name: str, uri: str) -> str:
    """The id of experiment ``name`` in the store at ``uri``: created if missing (with
    its artifact location under ``artifact_root(uri)``), restored if deleted. Safe when
    several processes create it at once."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    found = client.get_experiment_by_name(name)
    if found is None:
        root = artifact_root(uri)
        location = (root / safe_name(name, "experiment")).as_uri() if root is not None else None
        try:
            return str(client.create_experiment(name, artifact_location=location))
        except MlflowException:
            found = client.get_experiment_by_name(name)  # another process made it first
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        log.info("restoring the deleted MLflow experiment %r", name)
        client.restore_experiment(found.experiment_id)
    return str(found.experiment_id)
