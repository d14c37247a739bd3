"""Fresh MLflow stores for the tests, made by copying one empty store.

MLflow builds a new SQLite store by running its whole history of schema migrations,
about 4 CPU-seconds each time, and dozens of tests want a store of their own. Here that
is done once per test process; each test then gets a copy of the migrated, still empty
database at the path it chose (MLflow sees every table present and migrates nothing).

Tests that check that imgclass creates a store itself (its folder, its file) must not
use this: they pass a plain ``sqlite:///`` URI to a path that does not exist yet.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path


@cache
def _empty_store() -> Path:
    """An MLflow SQLite store with every table and nothing in it, made once a process."""
    from mlflow.tracking import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="imgclass-mlflow-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    db = folder / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()  # creates and migrates it
    return db


def fresh_store(db: Path) -> str:
    """A new, empty MLflow store at ``db`` (its folder made too); its tracking URI."""
    db.parent.mkdir(parents=True, exist_ok=True)
    if db.exists():
        raise FileExistsError(f"{db} exists: a fresh store needs a new path")
    shutil.copyfile(_empty_store(), db)
    return f"sqlite:///{db}"
