"""Durability and process faults of the server (issue 10): the feedback database deleted
or replaced while serving, acknowledged writes, workers outliving their parent, and
connections that never finish their request headers. Real app, real SQLite, real
uvicorn and a real `imgclass serve` process."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from durable_support import STROKES, digits_bundle, free_port, wait_for
from fastapi.testclient import TestClient
from sqlalchemy import event

from imgclass.feedback.store import FeedbackStore, FeedbackUnavailable
from imgclass.serve.app import create_app
from imgclass.serve.settings import ServeSettings

ADMIN = {"Authorization": "Bearer s3cret"}
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return digits_bundle(tmp_path_factory.mktemp("durable") / "bundle")


def serve(bundle, db):
    settings = ServeSettings(models=[str(bundle)], feedback_db=db, admin_token="s3cret")
    return TestClient(create_app(settings))


def post(client, k: int):
    """A new drawing each time (``k`` moves it), so no post is a duplicate."""
    strokes = [[[10 + k, 60, 120], [20, 90, 200]]]
    return client.post("/v1/feedback", json={"input": {"strokes": strokes}, "label": "7"})


def ids_in(path) -> set[int]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM feedback")}


def errors_about(caplog, word: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and word in r.getMessage()]


def test_a_replaced_database_file_is_refused_and_every_acknowledged_row_is_kept(
    bundle, tmp_path, caplog
):
    db = tmp_path / "fb.sqlite3"
    acknowledged = []
    with serve(bundle, db) as client:
        for k in range(5):
            acknowledged.append(post(client, k).json()["id"])
        # a restore from a copy while serving: a consistent copy renamed over the path
        copy = tmp_path / "copy.sqlite3"
        with sqlite3.connect(db) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
        dst.close()
        src.close()
        os.replace(copy, db)
        for k in range(5, 15):
            r = post(client, k)
            assert r.status_code == 503, r.text
            assert "replaced" in r.json()["detail"] and "id" not in r.json()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "replaced" in ready.json()["reason"]
        assert client.get("/v1/feedback/stats", headers=ADMIN).status_code == 503
        assert client.get("/v1/feedback", headers=ADMIN).status_code == 503
        assert client.get("/v1/feedback/export", headers=ADMIN).status_code == 503
        assert client.post("/v1/feedback/1/accept", headers=ADMIN).status_code == 503
    assert ids_in(db) == set(acknowledged)  # every acknowledged row, and nothing else
    logged = errors_about(caplog, "replaced")
    assert len(logged) == 1 and str(db) in logged[0].getMessage()  # once, with the path


def test_a_deleted_database_file_is_refused_and_not_recreated_empty(bundle, tmp_path, caplog):
    db = tmp_path / "fb.sqlite3"
    with serve(bundle, db) as client:
        assert post(client, 0).status_code == 200
        assert client.get("/readyz").status_code == 200
        for suffix in ("", "-wal", "-shm"):
            db.with_name(db.name + suffix).unlink(missing_ok=True)
        for k in range(1, 20):
            r = post(client, k)
            assert r.status_code == 503 and "deleted" in r.json()["detail"], r.text
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "deleted" in ready.json()["reason"]
        stats = client.get("/v1/feedback/stats", headers=ADMIN)
        assert stats.status_code == 503 and "deleted" in stats.json()["detail"]
        assert client.get("/v1/predict").status_code != 500  # predictions still served
    assert not db.exists()  # no empty database was made in its place
    assert len(errors_about(caplog, "deleted")) == 1


def test_a_write_that_lands_in_a_replaced_file_is_not_acknowledged(tmp_path):
    """The file replaced while the insert's transaction is open (after the check before
    it): the row goes to the old file, so the store refuses instead of answering an id."""
    db = tmp_path / "fb.sqlite3"
    with FeedbackStore.from_path_or_url(db) as store:
        store.add(label="1", input_kind="strokes", strokes=STROKES)

        replaced = []

        def replace_file(_conn):
            if replaced:
                return
            replaced.append(True)
            copy = tmp_path / "copy.sqlite3"
            with sqlite3.connect(db) as src, sqlite3.connect(copy) as dst:
                src.backup(dst)
            dst.close()
            src.close()
            os.replace(copy, db)

        event.listen(store.engine, "commit", replace_file)
        with pytest.raises(FeedbackUnavailable, match="the submission was not stored"):
            store.add(label="2", input_kind="strokes", strokes=STROKES)
    assert 1 in ids_in(db)  # (the refused row may show through the old file's WAL)


def test_acknowledged_writes_are_fsynced(tmp_path):
    """synchronous=FULL in WAL mode: a committed row survives power loss, not only a
    crash of the process (NORMAL)."""
    store = FeedbackStore.from_path_or_url(tmp_path / "fb.sqlite3")
    with store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def children_of(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``pid``, from /proc."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == pid and stat[0] != "Z":
                found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rpartition(")")[2].split()[:2]
    return state, int(ppid)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_workers_exit_when_the_main_process_is_killed(bundle, tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    env.pop("IMGCLASS_MODELS", None)
    command = [sys.executable, "-m", "imgclass", "serve", "--model", str(bundle)]
    command += ["--port", str(port), "--workers", "2", "--feedback-db", str(tmp_path / "fb.db")]
    main = subprocess.Popen(command, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", 60)
        deadline = time.monotonic() + 30
        while len(workers := children_of(main.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers) >= 2, workers
        os.kill(main.pid, signal.SIGKILL)
        main.wait()
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in workers), "workers outlived the main process"
        with socket.socket() as s:  # a restart can bind the port again
            s.bind(("127.0.0.1", port))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(main.pid, signal.SIGKILL)
