"""The app factory of ``imgclass serve``'s worker processes: each ends when its parent does.

With ``--workers N`` uvicorn's supervisor (the main process) binds the port and starts N
worker processes that share the listening socket. When the main process is killed
(``kill -9``, the OOM killer) nothing tells the workers: they kept serving, held the port,
and a restart failed with "Address already in use". Each worker now asks the kernel for
SIGTERM when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``), and a watchdog thread
checks the parent pid every half second wherever that is missing. SIGTERM is uvicorn's
graceful shutdown (requests in flight finish); after ``GRACE_SECONDS`` the worker exits
regardless.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
POLL_SECONDS = 0.5
GRACE_SECONDS = 10.0


def create_worker_app() -> Any:
    """``create_app()``, in a process that will not outlive its parent."""
    die_with_parent()
    from imgclass.serve.app import create_app

    return create_app()


def die_with_parent(grace: float = GRACE_SECONDS) -> bool:
    """In a process started by ``multiprocessing`` (a uvicorn worker): stop when the parent
    process dies. Returns False (and does nothing) in any other process."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return False
    _set_parent_death_signal(signal.SIGTERM)
    watch = threading.Thread(
        target=_watch_parent, args=(parent.pid, grace), name="imgclass-parent-watch", daemon=True
    )
    watch.start()
    return True


def _set_parent_death_signal(sig: int) -> None:
    """Linux only: the kernel sends ``sig`` to this process when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as exc:  # no libc prctl: the watchdog still works
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable: %s", exc)


def _watch_parent(parent_pid: int, grace: float) -> None:
    """Wait until the parent is gone (this process re-parented), then SIGTERM ourselves
    (uvicorn's graceful shutdown) and exit for good after ``grace`` seconds."""
    while os.getppid() == parent_pid:
        time.sleep(POLL_SECONDS)
    log.error(
        "the server's main process (pid %d) is gone: worker %d stops", parent_pid, os.getpid()
    )
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace)
    os._exit(1)
