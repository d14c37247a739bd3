"""Background retrain jobs for the admin API.

A job runs ``imgclass retrain ... --json`` as a subprocess, so a crash, a runaway memory
use or a kill cannot hurt the server. Its state lives on disk, one folder per job
(``job.json``, ``log.txt``, ``result.json``), so every server worker sees every job and
a restarted server still answers for old ones. One job runs at a time: starting another
while one runs is a ``JobBusy`` (the API's 409). Status: ``queued`` (accepted, process
not yet started), ``running``, ``succeeded``, ``failed`` or ``cancelled`` (stopped by
``cancel``: SIGTERM to the job's process group, SIGKILL if it is still there
CANCEL_GRACE_S later; a retrain stopped half-way changes neither the champion nor the
feedback store).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from imgclass.atomic import process_alive, write_text
from imgclass.errors import ImgclassError

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
ACTIVE = ("queued", "running")
CANCEL_GRACE_S = 10.0


class JobBusy(ImgclassError):
    """A retrain is already running."""


class JobNotFound(ImgclassError, LookupError):
    """No job with that id."""


class JobNotActive(ImgclassError):
    """The job has already ended (it cannot be cancelled)."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class RetrainJobs:
    """Start and follow retrain subprocesses, their records kept under ``folder``.

    command: the argument list after ``imgclass`` (``["retrain", "--registry", ...]``);
    each job adds its own arguments and ``--json``. env: extra environment variables.
    """

    def __init__(
        self, folder: str | Path, command: Sequence[str], env: dict[str, str] | None = None
    ) -> None:
        self.folder = Path(folder)
        self.command = list(command)
        self.env = dict(env or {})
        self.folder.mkdir(parents=True, exist_ok=True)
        self._threads: dict[str, threading.Thread] = {}

    # --- records ---------------------------------------------------------------------

    def _path(self, job: str) -> Path:
        if not job or not all(c.isalnum() or c == "-" for c in job):
            raise JobNotFound(f"no retrain job {job!r}")
        return self.folder / job

    def _read(self, job: str) -> dict[str, Any]:
        try:
            record: dict[str, Any] = json.loads((self._path(job) / "job.json").read_text())
        except (OSError, ValueError):
            raise JobNotFound(f"no retrain job {job!r}") from None
        return record

    def _write(self, record: dict[str, Any]) -> None:
        folder = self._path(record["id"])
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "job.json", json.dumps(record, indent=1) + "\n")

    def _settle(self, record: dict[str, Any]) -> dict[str, Any]:
        """A job recorded as active whose process is gone (the server died with it) is
        failed; one started by another worker of this server is left to that worker."""
        if record["status"] in ACTIVE and record["id"] not in self._threads:
            started = time.time() - record.get("created_ts", 0)
            gone = record["status"] == "running" and not process_alive(record.get("pid"))
            stale = record["status"] == "queued" and started > 60
            if gone or stale:
                if record.get("cancel_requested"):
                    record.update(status="cancelled", finished=_now(), error=CANCELLED)
                else:
                    record.update(
                        status="failed",
                        finished=_now(),
                        error="the retrain process ended without reporting (server stopped?)",
                    )
                self._write(record)
        return record

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One starter at a time across the server's worker processes."""
        with open(self.folder / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- the API ---------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """Every job, newest first (without log tails)."""
        records = []
        for path in self.folder.glob("*/job.json"):
            with contextlib.suppress(JobNotFound):
                records.append(self._settle(self._read(path.parent.name)))
        return sorted(records, key=lambda r: r.get("created_ts", 0), reverse=True)

    def active(self) -> dict[str, Any] | None:
        return next((r for r in self.records() if r["status"] in ACTIVE), None)

    def get(self, job: str) -> dict[str, Any]:
        """A job's record with the tail of its log and, when done, its result."""
        record = self._settle(self._read(job))
        folder = self._path(job)
        try:
            lines = (folder / "log.txt").read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        record["log_tail"] = lines[-LOG_TAIL_LINES:]
        return record

    def start(self, args: Sequence[str] = ()) -> dict[str, Any]:
        """Start a retrain with extra ``args``; JobBusy while another one runs."""
        with self._lock():
            running = self.active()
            if running is not None:
                raise JobBusy(f"a retrain is already running (job {running['id']})")
            job = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
            argv = [sys.executable, "-m", "imgclass", *self.command, *args, "--json"]
            record = {
                "id": job,
                "status": "queued",
                "created": _now(),
                "created_ts": time.time(),
                "args": list(args),
                "pid": None,
            }
            self._write(record)
            self._launch(record, argv)
        return self.get(job)

    def _launch(self, record: dict[str, Any], argv: list[str]) -> None:
        folder = self._path(record["id"])
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        with open(folder / "log.txt", "wb") as log_file, open(folder / "stdout.txt", "wb") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=log_file, env=env, start_new_session=True
            )
        record.update(status="running", started=_now(), pid=proc.pid)
        self._write(record)
        thread = threading.Thread(
            target=self._wait, args=(record, proc), daemon=True, name=f"retrain-{record['id']}"
        )
        self._threads[record["id"]] = thread
        thread.start()

    def _wait(self, record: dict[str, Any], proc: subprocess.Popen[bytes]) -> None:
        """Record the outcome when the process ends."""
        code = proc.wait()
        folder = self._path(record["id"])
        with contextlib.suppress(JobNotFound):  # any worker may have asked for a cancel
            record = {**record, **self._read(record["id"])}
        record.update(returncode=code, finished=_now())
        result = _last_json(folder / "stdout.txt")
        if code == 0 and result is not None:
            record.update(status="succeeded", result=result)
            (folder / "result.json").write_text(json.dumps(result, indent=1) + "\n")
        elif record.get("cancel_requested"):
            record.update(status="cancelled", error=CANCELLED)
        else:
            record.update(status="failed", error=_error_line(folder / "log.txt", code))
        self._write(record)
        self._threads.pop(record["id"], None)

    def cancel(self, job: str) -> dict[str, Any]:
        """Stop a running job: SIGTERM to its process group now, SIGKILL if it is still
        running CANCEL_GRACE_S later. JobNotActive when it has already ended."""
        with self._lock():
            record = self._settle(self._read(job))
            if record["status"] not in ACTIVE:
                raise JobNotActive(f"retrain job {job} has already ended ({record['status']})")
            record["cancel_requested"] = _now()
            self._write(record)
        pid = record.get("pid")
        if pid:
            self._signal(job, int(pid), signal.SIGTERM)
            timer = threading.Timer(CANCEL_GRACE_S, self._signal, (job, int(pid), signal.SIGKILL))
            timer.daemon = True
            timer.start()
        return self.get(job)

    def _signal(self, job: str, pid: int, sig: signal.Signals) -> None:
        """Send ``sig`` to the job's process group, if the job is still running there."""
        with contextlib.suppress(JobNotFound):
            if self._read(job)["status"] not in ACTIVE or not process_alive(pid):
                return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)  # started with start_new_session: its group id is its pid
            log.info("retrain job %s: sent %s", job, sig.name)

    def wait(self, job: str, timeout: float = 600) -> dict[str, Any]:
        """Block until the job ends (for tests and scripts); its record."""
        thread = self._threads.get(job)
        if thread is not None:
            thread.join(timeout)
        deadline = time.monotonic() + timeout
        while self.get(job)["status"] in ACTIVE and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.get(job)


CANCELLED = "cancelled by an admin before it finished"


def _last_json(path: Path) -> dict[str, Any] | None:
    """The last line of ``path`` that is a JSON object (what ``--json`` printed)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            loaded = json.loads(line)
            if isinstance(loaded, dict):
                return loaded
    return None


def _error_line(log_path: Path, code: int) -> str:
    """The CLI's one-line ``error: ...`` message, else how the process ended."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: ") :]
    if code < 0:
        return f"the retrain process was killed (signal {-code})"
    return f"the retrain process exited with status {code}"
