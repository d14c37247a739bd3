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
from durable_support import STROKES, digits_bundle, free_port, real_server, wait_for
from fastapi.testclient import TestClient
from sqlalchemy import event

from imgclass.feedback.store import FeedbackStore, FeedbackUnavailable
from imgclass.serve.app import create_app
from imgclass.serve.protocol import with_header_timeout
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
            # as uvicorn binds it: SO_REUSEADDR lets a new listener past the closed
            # connections' TIME_WAIT, but not past a live listener left by a worker
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(main.pid, signal.SIGKILL)


@pytest.fixture(scope="module", params=["auto", "h11"])
def quick_header_server(request, bundle, tmp_path_factory):
    """A real uvicorn with the server's protocol (httptools' and h11's) and a 1-second
    header deadline."""
    db = tmp_path_factory.mktemp("headers") / "fb.sqlite3"
    app = create_app(ServeSettings(models=[str(bundle)], feedback_db=db))
    with real_server(app, http=with_header_timeout(1.0, parser=request.param)) as port:
        yield port


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)  # far past the 1 s deadline: a recv that times out means "held open"
    return s


def read_until_closed(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    return data


def read_response(s: socket.socket) -> bytes:
    """One whole response (its headers and Content-Length bytes of body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096) or b"EOF"
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().partition(b"content-length: ")[2].split(b"\r\n")[0] or 0)
    while len(body) < length:
        body += s.recv(4096)
    return head + b"\r\n\r\n" + body


def test_connections_without_complete_headers_are_closed(quick_header_server):
    port = quick_header_server
    silent = connect(port)
    partial = [connect(port) for _ in range(100)]
    for s in partial:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    trickle = connect(port)
    trickle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    for _ in range(8):  # sending a byte now and then does not move the deadline
        with contextlib.suppress(OSError):
            trickle.sendall(b"a")
        time.sleep(0.25)
    assert read_until_closed(silent) == b""
    for s in partial:
        assert read_until_closed(s).startswith(b"HTTP/1.1 408 ")
    assert read_until_closed(trickle).startswith(b"HTTP/1.1 408 ")
    for s in [silent, trickle, *partial]:
        s.close()


def test_bytes_that_are_no_request_are_refused(quick_header_server):
    """Not even an HTTP method: a 4xx and the connection closed (httptools' parser answers
    400 at once; h11's waited for the header deadline and answered 408)."""
    with connect(quick_header_server) as s:
        s.sendall(b"a")
        answer = read_until_closed(s)
    assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 408 ")), answer[:40]


def test_complete_requests_are_not_cut_by_the_header_deadline(quick_header_server):
    port = quick_header_server
    with connect(port) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s).startswith(b"HTTP/1.1 200 ")
        time.sleep(0.5)  # a kept-alive connection, then a second request in pieces
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(0.6)  # 1.1 s after the first request started: the deadline is per request
        s.sendall(b"Host: x\r\n\r\n")
        assert read_response(s).startswith(b"HTTP/1.1 200 ")
    body = b'{"strokes": [[[10, 60, 120], [20, 90, 200]]]}'
    with connect(port) as s:  # a body sent slowly, past the header deadline, is still read
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))  # fmt: skip
        for k in range(0, len(body), 16):
            s.sendall(body[k : k + 16])
            time.sleep(0.5)
        assert read_response(s).startswith(b"HTTP/1.1 200 ")


def test_a_bad_header_timeout_is_a_one_line_error(bundle, monkeypatch, capsys):
    from imgclass.cli import main

    monkeypatch.setenv("IMGCLASS_HEADER_TIMEOUT_SECONDS", "0")
    assert main(["serve", "--model", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert "IMGCLASS_HEADER_TIMEOUT_SECONDS" in err and "Traceback" not in err
