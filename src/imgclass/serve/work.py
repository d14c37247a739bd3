"""CPU work of requests (decoding, rendering, preprocessing, inference) off the event loop.

The routes are ``async``: one event loop reads every request and answers ``/healthz``.
Anything that takes CPU time on that loop stalls all of them (a 25 MP PNG held
``/healthz`` for 4.7 s), so the work runs on one bounded thread pool instead; ONNX
Runtime, Pillow, OpenCV and most numpy release the GIL while they compute.

Three bounds keep an overloaded server answering:

- ``threads`` workers at most (default: the number of cores);
- ``max_queue`` requests admitted at once, working or waiting: one more is refused at
  once with 503 and ``Retry-After``, instead of queueing without end;
- a per-request ``timeout``: work that has not started by then never starts (503), and
  the request is answered 504 when it could not finish in time. Running work cannot be
  interrupted, so long jobs call ``Deadline.check`` between their steps (between the
  items of a batch) and stop there; until work stops it still counts against
  ``max_queue``, so abandoned work cannot pile up behind the limit.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from imgclass.serve.predictor import BadInput

T = TypeVar("T")
RETRY_AFTER_S = 1  # what a refused client is told to wait; the queue drains in ms to s


class Deadline:
    """The moment a request's work must be done by (``time.monotonic`` seconds)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    def check(self) -> None:
        """Raise the 504 answer once the deadline has passed (call between steps)."""
        if self.left() <= 0:
            raise timed_out(self.seconds)


def timed_out(seconds: float) -> BadInput:
    return BadInput(
        f"the request did not finish within {seconds:g} s (IMGCLASS_REQUEST_TIMEOUT); "
        "send a smaller image or batch",
        504,
    )


def busy(detail: str) -> BadInput:
    return BadInput(detail, 503, headers={"Retry-After": str(RETRY_AFTER_S)})


class WorkPool:
    """A bounded thread pool with an admission limit and per-request deadlines."""

    def __init__(self, threads: int, max_queue: int, timeout: float) -> None:
        self.threads = threads
        self.max_queue = max_queue
        self.timeout = timeout
        self._executor: ThreadPoolExecutor | None = None  # started on first use
        self._lock = threading.Lock()
        self.admitted = 0  # requests working or waiting, released when their work stops

    async def run(self, work: Callable[[Deadline], T]) -> T:
        """``work(deadline)`` on a worker thread; 503 when the queue is full or the work
        could not start before the deadline, 504 when it could not finish by then."""
        deadline = Deadline(self.timeout)
        self._admit()
        try:
            future = self._pool().submit(self._start, work, deadline)
        except RuntimeError:  # shut down by another thread meanwhile
            self._release()
            raise busy("the server is shutting down") from None
        future.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), deadline.left())
        except TimeoutError:
            if future.cancel():  # it had not started, and now never will
                raise busy(
                    f"the server is busy: the request could not start within "
                    f"{self.timeout:g} s (IMGCLASS_REQUEST_TIMEOUT)"
                ) from None
            raise timed_out(self.timeout) from None

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.threads, thread_name_prefix="imgclass-work"
                )
            return self._executor

    def _admit(self) -> None:
        with self._lock:
            if self.admitted >= self.max_queue:
                raise busy(
                    f"the server is busy: {self.admitted} requests are already being "
                    f"processed or waiting (IMGCLASS_MAX_QUEUE={self.max_queue}); retry shortly"
                )
            self.admitted += 1

    def _release(self, _: Future[Any] | None = None) -> None:
        with self._lock:
            self.admitted -= 1

    @staticmethod
    def _start(work: Callable[[Deadline], T], deadline: Deadline) -> T:
        deadline.check()  # waited too long in the queue: the client has its answer already
        return work(deadline)

    def shutdown(self) -> None:
        """Drop the work that has not started and let the threads end (the app's lifespan
        ends). An app started again (as tests do) gets new threads on its next request."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
