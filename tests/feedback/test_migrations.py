"""Schema migrations: new databases, down and up again, the first store's databases,
databases that are not ours, several processes opening a new database at once, and
PostgreSQL when a server and a driver are at hand."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from imgclass.errors import FeedbackError
from imgclass.feedback import db
from imgclass.feedback.schema import Base
from imgclass.feedback.store import FeedbackStore

# The schema of the first store (src/imgclass/serve/feedback.py before the migrations).
FIRST_SCHEMA = """
CREATE TABLE feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL, model TEXT, version TEXT,
    input_kind TEXT NOT NULL, input_json TEXT, image BLOB, content_hash TEXT NOT NULL UNIQUE,
    predicted TEXT, label TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'new', client_id TEXT
);
CREATE INDEX feedback_status ON feedback (status);
"""


def schema_diff(engine) -> list:
    """Differences between the migrated database and the ORM models (none expected)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


def test_a_new_database_is_at_head_and_matches_the_models(tmp_path):
    with FeedbackStore.from_path_or_url(tmp_path / "fb.sqlite3") as store:
        assert store.revision() == db.head_revision()
        assert schema_diff(store.engine) == []


def test_downgrade_to_base_then_upgrade_to_head(tmp_path):
    with FeedbackStore.from_path_or_url(tmp_path / "fb.sqlite3") as store:
        store.add(label="cat", input_kind="image", image=b"x")
        db.downgrade(store.engine, "base")
        with store.engine.connect() as conn:
            assert "feedback" not in inspect(conn).get_table_names()
            assert db.current_revision(conn) is None
        db.upgrade(store.engine)
        assert store.revision() == db.head_revision() and store.count() == 0
        assert store.add(label="cat", input_kind="image", image=b"x")[1] is False
        assert schema_diff(store.engine) == []


def test_a_database_of_the_first_store_is_converted(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(FIRST_SCHEMA)
        rows = [
            ("2026-01-02T03:04:05Z", "m", "v", "strokes", "[[[1, 2], [3, 4]]]", None, "h1",
             '[{"label": "7", "probability": 0.5}]', "1", "accepted", "c"),
            ("2026-01-02T03:04:06Z", "m", "v", "strokes", "[[[1.0, 2.0], [3.0, 4.0]]]", None,
             "h2", None, "1", "new", None),  # the same drawing: one row after conversion
            ("2026-01-02T03:04:07Z", "m", "v", "image", None, b"\x89PNG", "h3", None, "2",
             "rejected", None),
        ]  # fmt: skip
        conn.executemany(
            "INSERT INTO feedback (created, model, version, input_kind, input_json, image,"
            " content_hash, predicted, label, status, client_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
    with FeedbackStore.from_path_or_url(path) as store:
        assert store.revision() == db.head_revision()
        items = store.list()
        assert [(r["label"], r["status"], r["input_kind"]) for r in items] == [
            ("2", "rejected", "image"),
            ("1", "accepted", "strokes"),
        ]
        first = store.get(items[1]["id"], with_input=True)
        assert first["strokes"] == [[[1, 2], [3, 4]]] and first["client_id"] == "c"
        assert first["created"].startswith("2026-01-02T03:04:05")
        assert first["predicted"] == [{"label": "7", "probability": 0.5}]
        assert store.get(items[0]["id"], with_input=True)["image"] == b"\x89PNG"
        assert store.add(label="1", input_kind="strokes", strokes=[[[1, 2], [3, 4]]])[1] is True
        with store.engine.connect() as conn:
            assert "feedback_legacy" not in inspect(conn).get_table_names()
        assert schema_diff(store.engine) == []


def test_a_feedback_table_that_is_not_ours_is_refused(tmp_path):
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE feedback (id INTEGER PRIMARY KEY, comment TEXT)")
        conn.execute("INSERT INTO feedback (comment) VALUES ('keep me')")
    with pytest.raises(FeedbackError, match="table 'feedback' that imgclass did not make"):
        FeedbackStore.from_path_or_url(path)
    with sqlite3.connect(path) as conn:  # untouched
        assert conn.execute("SELECT comment FROM feedback").fetchall() == [("keep me",)]
        assert "alembic_version" not in {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }


def test_a_database_from_a_newer_imgclass_is_refused(tmp_path):
    path = tmp_path / "fb.sqlite3"
    FeedbackStore.from_path_or_url(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(FeedbackError, match="newer imgclass"):
        FeedbackStore.from_path_or_url(path)


def test_processes_opening_a_new_database_at_once_migrate_it_once(tmp_path):
    """Server workers start together: each opens (and would migrate) the same new file."""
    path = tmp_path / "fb.sqlite3"
    go = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.005)\n"
        "from imgclass.feedback.store import FeedbackStore\n"
        f"s = FeedbackStore.from_path_or_url({str(path)!r})\n"
        "print(s.add(label='x', input_kind='image', image=b'same')[1], s.revision())\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    time.sleep(1.5)  # let them all import and wait at the starting line
    go.touch()
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(o[0] for o in outs) == ["False", "True", "True", "True"]
    assert {o[1] for o in outs} == {db.head_revision()}


def test_opening_waits_for_a_worker_that_is_creating_the_new_file(tmp_path):
    """The race CI once lost: another worker holds the write lock on the new file, still
    in rollback-journal mode, when this one switches to WAL. SQLite answers that switch
    with "database is locked" at once, without its busy handler; opening must wait."""
    path = tmp_path / "fb.sqlite3"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE unrelated (x)")
    timer = threading.Timer(0.5, other.execute, ("COMMIT",))
    timer.start()
    started = time.monotonic()
    try:
        store = FeedbackStore.from_path_or_url(path)
    finally:
        timer.join()
        other.close()
    assert time.monotonic() - started >= 0.4  # it did wait for the other writer
    assert store.revision() == db.head_revision()
    assert store.add(label="x", input_kind="image", image=b"after")[1] is False


# --- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server (initdb + pg_ctl in a temp folder, on a Unix socket);
    skipped where PostgreSQL or the psycopg driver is not installed."""
    pytest.importorskip("psycopg")
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found")
    # Not under pytest's temp folder: PostgreSQL runs as another user where we are root,
    # and that folder is private to us.
    root = Path(tempfile.mkdtemp(prefix="imgclass-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    user = _pg_user()
    run = _as(user, root)
    subprocess.run([*run, str(bindir / "initdb"), "-D", str(data), "-U", "imgclass", "-A", "trust"],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    opts = f"-k {sock} -c listen_addresses='' -c fsync=off"
    subprocess.run([*run, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-w",
                    "-l", str(root / "log"), "start"], check=True, capture_output=True, timeout=60)  # fmt: skip
    try:
        yield f"postgresql+psycopg://imgclass@/postgres?host={sock}"
    finally:
        subprocess.run([*run, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found and (Path(found).resolve().parent / "initdb").exists():
        return Path(found).resolve().parent
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    return None


def _pg_user() -> str | None:
    """PostgreSQL refuses to run as root: use the postgres account there."""
    return "postgres" if os.geteuid() == 0 else None


def _as(user: str | None, root: Path) -> list[str]:
    if user is None:
        return []
    shutil.chown(root, user)
    for p in root.iterdir():
        shutil.chown(p, user)
    return ["runuser", "-u", user, "--"]


def test_postgresql_by_url(postgres_url):
    with FeedbackStore(postgres_url) as store:
        assert store.revision() == db.head_revision()
        fid, dup = store.add(label="cat", input_kind="strokes", strokes=[[[1, 2], [3, 4]]])
        assert (fid, dup) == (1, False)
        assert store.add(label="cat", input_kind="strokes", strokes=[[[1.0, 2], [3, 4]]]) == (
            1,
            True,
        )
        img, _ = store.add(label="dog", input_kind="image", image=b"\x00\x01bytes")
        assert store.get(img, with_input=True)["image"] == b"\x00\x01bytes"
        assert store.set_status([fid, img], "accepted") == 2
        assert [i.id for i in store.iter_inputs()] == [fid, img]
        assert schema_diff(store.engine) == []
        drawing = {"input_kind": "strokes", "strokes": [[[5], [6], [0]]], "drawing_id": "d"}
        first, _ = store.add(label="cat", **drawing)
        assert store.add(label="dog", **drawing) == (first, False)  # replaced in place
        assert store.add(label="cat", input_kind="strokes", strokes=[[[1, 2], [3, 4]]],
                         drawing_id="d") == (fid, True)  # fmt: skip
        assert store.count() == 2  # the drawing's own row gave way to the existing answer
        store.add(label="sun", input_kind="strokes", strokes=[[[7], [8]]], source="game",
                  prompt="sun", recognized=False)  # fmt: skip
        assert store.game_results() == {"sun": (1, 0)}
        db.downgrade(store.engine, "base")
        db.upgrade(store.engine)
        assert store.count() == 0
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            == db.head_revision()
        )
    engine.dispose()


def test_a_database_at_the_first_migration_upgrades_in_place(tmp_path):
    """A database made before submissions had a source and a drawing id (revision 0001)
    keeps its rows: they say 'api', and the new columns work at once."""
    path = tmp_path / "fb.sqlite3"
    with FeedbackStore.from_path_or_url(path) as store:
        db.downgrade(store.engine, "0001")
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO feedback (created_at, input_kind, strokes_json, content_hash, label,"
            " status) VALUES ('2026-11-30 10:00:00', 'strokes', '[[[1,2],[3,4]]]', 'h', 'cat',"
            " 'accepted')"
        )
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0001",)
    with FeedbackStore.from_path_or_url(path) as store:
        assert store.revision() == db.head_revision()
        [old] = store.list()
        assert (old["label"], old["status"], old["source"], old["drawing_id"]) == (
            "cat", "accepted", "api", None
        )  # fmt: skip
        fid, _ = store.add(label="sun", input_kind="strokes", strokes=[[[1], [2]]],
                           source="game", prompt="sun", recognized=True, drawing_id="g1")  # fmt: skip
        assert store.get(fid)["recognized"] is True
        assert schema_diff(store.engine) == []
