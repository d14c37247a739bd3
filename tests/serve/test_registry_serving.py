"""``imgclass serve --registry NAME`` against a real MLflow store and real uvicorn
servers: a promotion or rollback under load switches the answers to the new version
without a restart and without failing a request."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from imgclass.experiments.model_registry import ModelRegistry
from mlflow_support import fresh_store

LABELS = ["zero", "one", "two"]
WINNER = {"1": "zero", "2": "one", "3": "two"}  # what each registered version answers
TOKEN = "registry-test-token"


def constant_bundle(out: Path, winner: int) -> Path:
    """A real bundle whose ONNX model always ranks class ``winner`` first."""
    from onnx import TensorProto, helper, numpy_helper

    from imgclass.bundle import save_bundle
    from imgclass.data.preprocess import get_recipe

    k = len(LABELS)
    bias = np.full(k, -2.0, np.float32)
    bias[winner] = 2.0
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["f"]),
            helper.make_node("MatMul", ["f", "w"], ["m"]),
            helper.make_node("Add", ["m", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "constant",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", k])],
        [
            numpy_helper.from_array(np.zeros((784, k), np.float32), "w"),
            numpy_helper.from_array(bias, "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    spec = {"kind": "image", "layout": "nchw", "channels": 1, "size": [28, 28], "scale": 1 / 255}
    return save_bundle(
        out,
        model.SerializeToString(),
        LABELS,
        {"recipe": get_recipe("none"), "input": spec},
        {"test": {"accuracy": 0.5 + winner / 10, "n": 10}},
        {"name": "constant", "family": "test", "framework": "onnx", "input_kind": "image",
         "args": {"winner": winner}, "num_classes": k, "dataset": {"path": "/nowhere"}},
    )  # fmt: skip


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    """A store with ``digits`` versions 1, 2, 3 (answering zero, one, two); 1 is champion."""
    reg = ModelRegistry(fresh_store(tmp_path / "store" / "mlflow.db"))
    for winner in range(3):
        bundle = constant_bundle(tmp_path / f"run{winner}" / "bundle", winner)
        reg.register(bundle, "digits", alias="champion" if winner == 0 else None)
    return reg


def png_payload() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(buf, "PNG")
    return json.dumps({"image_base64": base64.b64encode(buf.getvalue()).decode()}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(url: str, method: str = "GET", body: bytes | None = None, token: str | None = None):
    """(status, parsed JSON body) of one request; HTTP errors are answers too."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@contextmanager
def server(reg: ModelRegistry, tmp: Path, poll: float, workers: int = 1) -> Iterator[str]:
    """``imgclass serve --registry digits`` in a subprocess; its URL once ready."""
    port = free_port()
    env = {**os.environ, "IMGCLASS_ADMIN_TOKEN": TOKEN}
    argv = [sys.executable, "-m", "imgclass", "serve", "--registry", "digits",
            "--tracking-uri", reg.uri, "--poll-seconds", str(poll), "--port", str(port),
            "--workers", str(workers), "--feedback-db", str(tmp / f"fb-{port}.sqlite3")]  # fmt: skip
    log = tmp / f"server-{port}.log"  # a file, not a pipe nobody reads (it could fill up)
    with log.open("w") as err:
        proc = subprocess.Popen(argv, env=env, cwd=tmp, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, limit: float = 60) -> None:
    started = time.perf_counter()
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the server stopped: {log.read_text()[-2000:]}")
        try:
            if call(url + "/readyz")[0] == 200:
                break
        except OSError:
            pass
        if time.perf_counter() - started > limit:
            pytest.fail(f"the server was not ready within {limit} s")
        time.sleep(0.05)
    print(f"serve --registry ready in {time.perf_counter() - started:.2f} s")


class Load:
    """Threads posting predictions until each has seen ``tail`` answers of version
    ``until`` (at most ``limit`` requests each): every answer is recorded in order.
    ``limit`` is high because the predict fast path answers in a few ms, and a worker
    takes a few hundred of those to poll, load and warm a promoted version."""

    def __init__(self, url: str, threads: int = 4, limit: int = 2000, tail: int = 25) -> None:
        self.url, self.limit, self.tail = url + "/v1/predict", limit, tail
        self.until = "2"
        self.payload = png_payload()
        self.answers: list[list[tuple[int, str, str]]] = [[] for _ in range(threads)]
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, i: int) -> None:
        seen = 0
        for _ in range(self.limit):
            try:
                status, body = call(self.url, "POST", self.payload)
            except OSError as exc:  # a refused or dropped connection is a failure too
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            top = body["predictions"][0]["label"] if status == 200 else ""
            self.answers[i].append((status, body.get("version", ""), top))
            seen = seen + 1 if body.get("version") == self.until else 0
            if seen >= self.tail:
                return

    def count(self) -> int:
        return sum(len(a) for a in self.answers)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for t in self.threads:
            t.join(timeout=120)

    def wait_for(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.count() >= n, f"only {self.count()} answers in {timeout} s"


def check_switch(load: Load, before: str, after: str) -> None:
    """No failure; every answer is 200 and comes from one whole version (its label
    matches its version); each thread starts on ``before`` and ends on ``after``."""
    assert not load.failures, load.failures[:3]
    every = [a for answers in load.answers for a in answers]
    assert {status for status, _, _ in every} == {200}
    assert all(WINNER[version] == top for _, version, top in every)
    for answers in load.answers:
        assert answers[0][1] == before
        assert [v for _, v, _ in answers[-load.tail :]] == [after] * load.tail
    print(f"{len(every)} requests, {sum(v == before for _, v, _ in every)} on {before}")


def test_promotion_under_load_switches_without_failing_a_request(registry, tmp_path):
    """Two worker processes, each polling the alias: a promotion made in the registry
    mid-load, then a rollback, reach both workers without a restart."""
    with server(registry, tmp_path, poll=0.3, workers=2) as url:
        status, models = call(url + "/v1/models")
        described = models["models"][0]
        assert (described["name"], described["version"]) == ("digits", "1")
        assert described["registry"]["aliases"] == ["champion"]
        with Load(url) as load:
            load.wait_for(120)
            registry.promote("digits", 2)
        check_switch(load, "1", "2")
        registry.rollback("digits")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            answers = [call(url + "/v1/predict", "POST", png_payload())[1] for _ in range(8)]
            if all(a["version"] == "1" for a in answers):
                break
            time.sleep(0.1)
        assert [a["predictions"][0]["label"] for a in answers] == ["zero"] * 8


def test_admin_reload_under_load_and_a_broken_version(registry, tmp_path):
    """Polling off: the admin endpoint switches at once; a version that cannot be loaded
    is refused with 503 and the old one keeps serving."""
    with server(registry, tmp_path, poll=0) as url:
        reload = url + "/v1/admin/reload"
        assert call(reload, "POST")[0] == 401
        assert call(reload, "POST", token="wrong")[0] == 401
        assert call(reload, "POST", token=TOKEN) == (
            200,
            {"model": "digits", "version": 1, "previous": 1, "changed": False},
        )
        with Load(url) as load:
            load.wait_for(120)
            registry.promote("digits", 2)
            time.sleep(0.3)  # polling is off: nothing changes until asked
            assert all(a[1] == "1" for answers in load.answers for a in answers)
            assert call(reload, "POST", token=TOKEN) == (
                200,
                {"model": "digits", "version": 2, "previous": 1, "changed": True},
            )
        check_switch(load, "1", "2")

        broken = registry.get("digits", 3)
        stored = Path(broken.source.removeprefix("file://")) / "model.onnx"
        stored.write_bytes(stored.read_bytes()[:-10])
        registry.promote("digits", 3)
        status, body = call(reload, "POST", token=TOKEN)
        assert status == 503
        assert "version 3" in body["detail"] and "still serving version 2" in body["detail"]
        assert call(url + "/v1/predict", "POST", png_payload())[1]["version"] == "2"
        assert call(url + "/readyz")[0] == 200

        registry.rollback("digits")
        assert call(reload, "POST", token=TOKEN)[1]["changed"] is False  # 2 is served
        registry.rollback("digits")
        assert call(reload, "POST", token=TOKEN)[1] == {
            "model": "digits", "version": 1, "previous": 2, "changed": True,
        }  # fmt: skip
        assert call(url + "/v1/predict", "POST", png_payload())[1]["predictions"][0] == {
            "label": "zero", "probability": pytest.approx(0.964663, abs=1e-5),
        }  # fmt: skip


def test_not_ready_until_a_champion_exists(tmp_path):
    """In process: a name without a champion leaves the server unready (503s, no crash)
    until one is promoted; the held-out views follow the new version."""
    from fastapi.testclient import TestClient

    from imgclass.serve.app import create_app
    from imgclass.serve.settings import ServeSettings

    reg = ModelRegistry(fresh_store(tmp_path / "mlflow.db"))
    reg.register(constant_bundle(tmp_path / "a" / "bundle", 0), "digits")
    settings = ServeSettings(
        registry="digits",
        tracking_uri=reg.uri,
        registry_poll_seconds=0,
        registry_cache=tmp_path / "cache",
        feedback_db=tmp_path / "fb.sqlite3",
        admin_token=TOKEN,
    )
    with TestClient(create_app(settings)) as client:
        time.sleep(0.3)
        assert client.get("/readyz").status_code == 503
        assert client.post("/v1/predict", content=png_payload(), headers={
            "Content-Type": "application/json"}).status_code == 503  # fmt: skip
        reg.promote("digits", 1)
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/readyz").json() == {"ready": True, "models": ["digits"]}
        state = client.app.state.imgclass  # type: ignore[attr-defined]
        first = state.held_out("digits")
        reg.register(constant_bundle(tmp_path / "b" / "bundle", 1), "digits", alias="champion")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert client.post("/v1/admin/reload", headers=auth).json()["version"] == 2
        assert state.held_out("digits") is not first
        assert state.held_out("digits").predictor.version == "2"


def test_reload_without_a_registry_is_refused(tmp_path):
    from fastapi.testclient import TestClient

    from imgclass.serve.app import create_app
    from imgclass.serve.settings import ServeSettings

    settings = ServeSettings(feedback_db=tmp_path / "fb.sqlite3", admin_token=TOKEN)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 409 and "--registry" in answer.json()["detail"]


def test_serve_refuses_an_unknown_name(tmp_path, capsys):
    from imgclass.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["serve", "--registry", "nothing", "--tracking-uri", uri,
            "--feedback-db", str(tmp_path / "fb.sqlite3")]  # fmt: skip
    saved = {k: os.environ.get(k) for k in ("IMGCLASS_MODELS", "IMGCLASS_FEEDBACK_DB")}
    try:
        assert main(args) == 2
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert "no model named 'nothing'" in capsys.readouterr().err


def test_a_trained_bundle_is_registered_from_its_training_run(digits_bundle, tmp_path):
    """The shared trained bundle was tracked in the session's store: registering it
    reuses that run's artifacts, and the fetched copy predicts exactly like the original."""
    from imgclass.bundle import load_bundle
    from imgclass.experiments.tracking import read_run_file

    reg = ModelRegistry()  # MLFLOW_TRACKING_URI: the session's store (tests/conftest.py)
    record = read_run_file(digits_bundle)
    assert record is not None
    info = reg.register(digits_bundle, f"trained-{tmp_path.name}", alias="champion")
    assert info.run_id == record["run_id"] and info.source.endswith("/bundle")
    assert info.tags["imgclass.model"] == "cnn-small"
    fetched = load_bundle(reg.fetch_bundle(info.name, cache_dir=tmp_path / "cache"))
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    expected = load_bundle(digits_bundle).predict_proba(images)
    np.testing.assert_array_equal(fetched.predict_proba(images), expected)
