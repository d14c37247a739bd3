"""The slim serving install, without Docker: a fresh virtual environment with only
requirements/serve.txt and imgclass itself (no torch), serving a real bundle."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.environ.get("IMGCLASS_SKIP_SLIM_INSTALL") == "1", reason="disabled"
)


def test_serving_runs_from_a_venv_without_torch(tmp_path, digits_bundle, shared_data):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    # this pip installs into the new environment (--python), which saves installing pip
    # there; --no-compile leaves the .pyc files to the first import: together they halve
    # the CPU time of this test, and the environment holds the same packages
    pip = [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-compile"]
    pip += ["--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(REPO / "requirements" / "serve.txt")], check=True, timeout=900)
    subprocess.run([*pip, "--no-deps", str(REPO)], check=True, timeout=600)
    probe = "import importlib.util as u; print([m for m in ('torch', 'sklearn', 'matplotlib') if u.find_spec(m)])"
    assert (
        subprocess.run(
            [str(py), "-c", probe], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "[]"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            str(env_dir / "bin" / "imgclass"),
            "serve",
            "--model",
            str(digits_bundle),
            "--port",
            str(port),
            "--feedback-db",
            str(tmp_path / "fb.sqlite3"),
        ]
    )
    try:
        url = f"http://127.0.0.1:{port}"
        started = time.perf_counter()
        while True:
            try:
                urllib.request.urlopen(url + "/readyz", timeout=1)
                break
            except OSError:
                assert server.poll() is None, "the server exited"
                # a deadline for a server that never comes up, not a speed check: its first
                # start compiles what it imports, over a minute on a loaded machine
                assert time.perf_counter() - started < 300
                time.sleep(0.1)
        body = json.dumps({"strokes": [[[140, 140, 141], [40, 150, 245]]]}).encode()
        request = urllib.request.Request(
            url + "/v1/predict", body, {"Content-Type": "application/json"}
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=10).read())
        assert len(answer["predictions"]) == 3
        assert answer["predictions"][0]["label"] in [str(d) for d in range(10)]
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()  # never leave a server behind, even on a loaded machine
            server.wait()
