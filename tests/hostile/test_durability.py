"""Durability and process faults of the server (issue 10): the feedback database deleted
or replaced while serving, acknowledged writes, workers outliving their parent, and
connections that never finish their request headers. Real app, real SQLite, real
uvicorn and a real `imgclass serve` process."""

from __future__ import annotations

import logging
import os
import sqlite3

import pytest
from durable_support import STROKES, digits_bundle
from fastapi.testclient import TestClient
from sqlalchemy import event

from imgclass.feedback.store import FeedbackStore, FeedbackUnavailable
from imgclass.serve.app import create_app
from imgclass.serve.settings import ServeSettings

ADMIN = {"Authorization": "Bearer s3cret"}


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
