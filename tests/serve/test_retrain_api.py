"""The retrain admin API on the real app: a job runs `imgclass retrain` in a subprocess
against a real registry and feedback store and is polled to its end; refusals without
the admin token; one job at a time; failures reported, not raised."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imgclass.serve.app import create_app
from imgclass.serve.settings import ServeSettings
from mlflow_support import fresh_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "feedback"))
from retrain_support import add_feedback, held_out_digits, prepare_digits, train_champion  # noqa: E402

ADMIN = {"Authorization": "Bearer s3cret"}


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrain-api")
    data = prepare_digits(root / "digits", "0,1,2,3,4,5,6,7")
    return train_champion(data, root / "champion", epochs=2)


@pytest.fixture
def client(champion, tmp_path, monkeypatch):
    """The app serving the champion bundle, its registry holding it as digits@champion,
    and accepted feedback teaching 8 and 9."""
    from imgclass.experiments.model_registry import ModelRegistry

    monkeypatch.chdir(tmp_path)  # the job's registry cache and run folder go here
    uri = fresh_store(tmp_path / "mlflow.db")
    ModelRegistry(uri).register(champion, "digits", alias="champion")
    images, labels = held_out_digits(60, classes=(8, 9))
    add_feedback(tmp_path / "fb.sqlite3", images, labels)
    settings = ServeSettings(
        models=[str(champion)],
        feedback_db=tmp_path / "fb.sqlite3",
        admin_token="s3cret",
        tracking_uri=uri,
        retrain_registry="digits",
        retrain_jobs=tmp_path / "jobs",
    )
    with TestClient(create_app(settings)) as c:
        c.uri = uri  # type: ignore[attr-defined]
        yield c


def poll(client, job: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/v1/admin/retrain/{job}", headers=ADMIN).json()
        if state["status"] not in ("queued", "running"):
            return state
        time.sleep(0.5)
    raise AssertionError(f"job {job} still {state['status']}: {state['log_tail'][-5:]}")


def test_a_job_runs_the_retrain_and_reports_its_outcome(client):
    from imgclass.experiments.model_registry import ModelRegistry

    answer = client.post("/v1/admin/retrain", json={"epochs": 2, "lr": 0.002}, headers=ADMIN)
    assert answer.status_code == 202, answer.text
    job = answer.json()["job"]
    assert answer.json()["status"] == "running"
    busy = client.post("/v1/admin/retrain", headers=ADMIN)  # one at a time
    assert busy.status_code == 409 and job in busy.json()["detail"]
    state = poll(client, job)
    assert state["status"] == "succeeded", state
    result = state["result"]
    assert result["name"] == "digits" and result["challenger_version"] == 2
    assert result["fine_tune"]["new_labels"] and result["fine_tune"]["epochs"] == 2
    assert state["args"] == ["--epochs", "2", "--lr", "0.002"]
    registry = ModelRegistry(client.uri)
    champion = registry.get("digits", "champion").version
    assert champion == (2 if result["promoted"] else 1)
    listed = client.get("/v1/admin/retrain", headers=ADMIN).json()
    assert [j["id"] for j in listed] == [job]
    assert client.get("/v1/admin/retrain/nope-1", headers=ADMIN).status_code == 404


def test_admin_token_is_required(client, champion, tmp_path):
    assert client.post("/v1/admin/retrain").status_code == 401
    bad = {"Authorization": "Bearer wrong"}
    assert client.get("/v1/admin/retrain/x", headers=bad).status_code == 401
    bad_body = client.post("/v1/admin/retrain", json={"epochs": 0}, headers=ADMIN)
    assert bad_body.status_code == 422 and "epochs" in bad_body.json()["detail"]
    settings = ServeSettings(
        models=[str(champion)], feedback_db=tmp_path / "fb.sqlite3", retrain_jobs=tmp_path / "j"
    )
    with TestClient(create_app(settings)) as off:
        assert off.post("/v1/admin/retrain").status_code == 403
    assert not (tmp_path / "j").exists() or not list((tmp_path / "j").glob("*/job.json"))


def test_a_failing_retrain_is_reported_as_failed(champion, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = ServeSettings(
        models=[str(champion)],
        feedback_db=tmp_path / "fb.sqlite3",
        admin_token="s3cret",
        tracking_uri=f"sqlite:///{tmp_path / 'empty.db'}",
        retrain_registry="nobody",
        retrain_jobs=tmp_path / "jobs",
    )
    with TestClient(create_app(settings)) as c:
        job = c.post("/v1/admin/retrain", headers=ADMIN).json()["job"]
        state = poll(c, job)
    assert state["status"] == "failed" and state["returncode"] == 2
    assert "nobody" in state["error"] and state["result"] is None


def test_a_running_job_can_be_cancelled_and_the_next_one_runs(client):
    """Cancel stops the subprocess; the champion and the feedback store stay as they
    were, and a new retrain may start at once."""
    import sqlite3

    from imgclass.experiments.model_registry import ModelRegistry

    rows_before = sqlite3.connect(Path.cwd() / "fb.sqlite3").execute(
        "SELECT id, status FROM feedback ORDER BY id").fetchall()  # fmt: skip
    job = client.post("/v1/admin/retrain", json={"epochs": 500}, headers=ADMIN).json()["job"]
    assert client.post("/v1/admin/retrain/nope-2/cancel", headers=ADMIN).status_code == 404
    assert client.post(f"/v1/admin/retrain/{job}/cancel").status_code == 401
    stopping = client.post(f"/v1/admin/retrain/{job}/cancel", headers=ADMIN)
    assert stopping.status_code == 202 and stopping.json()["cancel_requested"]
    state = poll(client, job, timeout=60)
    assert state["status"] == "cancelled", state
    assert state["returncode"] != 0 and "cancelled" in state["error"]
    again = client.post(f"/v1/admin/retrain/{job}/cancel", headers=ADMIN)
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    registry = ModelRegistry(client.uri)
    assert registry.get("digits", "champion").version == 1
    assert [v.version for v in registry.versions("digits")] == [1]
    rows_after = sqlite3.connect(Path.cwd() / "fb.sqlite3").execute(
        "SELECT id, status FROM feedback ORDER BY id").fetchall()  # fmt: skip
    assert rows_after == rows_before
    nxt = client.post("/v1/admin/retrain", json={"epochs": 1, "promote": False}, headers=ADMIN)
    assert nxt.status_code == 202
    assert poll(client, nxt.json()["job"])["status"] == "succeeded"
