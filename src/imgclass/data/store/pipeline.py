"""Reading an epoch's batches on background threads: ``read_batches``.

Reading is a pipeline (numcodecs releases the GIL): while the batches of one window
are served, the chunks of the next ones are decompressed into their own buffers and
the batches gathered out of them, so the caller mostly finds its next batch ready.
Memory stays bounded: at most PIPELINE_DEPTH window buffers are in use (more only for
batches spanning windows), and a buffer is reused once no batch to come reads it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .plan import BatchPlan, Segment, Window

if TYPE_CHECKING:
    from .reader import PreparedDataset

DECODE_THREADS = 2  # background threads decompressing chunks and gathering batches
AHEAD = 2  # the batches of window k are served while window k + AHEAD is planned
PIPELINE_DEPTH = 4  # window buffers in use at most (more only for batches spanning windows)

# (window number, index of the batch's examples, the job gathering it, its place in the job)
_Planned = tuple[int, np.ndarray, "Future[list[np.ndarray]]", int]


def read_batches(
    ds: PreparedDataset, split: str, plan: BatchPlan
) -> Generator[tuple[np.ndarray, np.ndarray, np.ndarray], None, None]:
    """The batches of ``plan`` over ``split``: (images uint8 (b, H, W[, C]), labels int64
    (b,), indices int64 (b,)). Closing the generator stops its threads at once."""
    labels = ds.labels(split)
    per_window = plan.chunks_per_window(ds.chunk_bytes)
    pipeline = _Pipeline(ds, split, per_window)
    try:
        for k, step in enumerate(plan.steps(ds.size(split), ds.rows, per_window)):
            if step.window is not None:
                pipeline.start(k, step.window)
            pipeline.first_open = step.first_open
            pipeline.gather(k, step.batches)
            # Serve what was planned AHEAD windows ago; the pool works on the rest.
            for images, index in pipeline.served(None if step.window is None else k - AHEAD):
                yield images, labels[index], index
        for images, index in pipeline.served(None):
            yield images, labels[index], index
    finally:
        pipeline.close()


class _Pipeline:
    """One epoch's reading: the window buffers in use (``live``, by window number) and
    free, the thread pool, and the batches planned but not yet served, in order."""

    def __init__(self, ds: PreparedDataset, split: str, per_window: int) -> None:
        self.ds, self.split = ds, split
        self.rows, self.shape = ds.rows, ds.image_shape
        self.size = per_window * ds.rows
        self.live: dict[int, _Live] = {}
        self.free: list[np.ndarray] = []
        self.ready: deque[_Planned] = deque()
        self.pool = ThreadPoolExecutor(max_workers=DECODE_THREADS)
        self.first_open = 0  # the window where the next batch starts: none before it is read again

    def start(self, k: int, window: Window) -> None:
        """Start decompressing the chunks of window ``k`` into a buffer (a free one, when
        windows that no batch to come reads have given theirs back)."""
        _recycle(self.live, self.free, self.first_open)
        buffer = self.free.pop() if self.free else np.empty((self.size, *self.shape), np.uint8)
        jobs = [
            self.pool.submit(self.ds.read_chunks, self.split, [c], buffer[j * self.rows :])
            for j, c in enumerate(window.chunks.tolist())
        ]
        self.live[k] = _Live(buffer, window, jobs)

    def gather(self, k: int, batches: list[list[Segment]]) -> None:
        """Start gathering the batches window ``k`` completes: by a few jobs (one per
        thread), not one job each, as a job costs tens of microseconds of Python."""
        groups = np.array_split(np.arange(len(batches)), max(1, min(len(batches), DECODE_THREADS)))
        for group in groups:
            if len(group):
                self._gather_group(k, [batches[i] for i in group])

    def _gather_group(self, k: int, batches: list[list[Segment]]) -> None:
        """One job gathering ``batches``; each window it reads keeps it as a user."""
        live = self.live
        parts = [
            [(live[j].jobs, live[j].buffer, live[j].slots[a:b]) for j, a, b in segments]
            for segments in batches
        ]
        job = self.pool.submit(_gather_batches, parts, self.shape)
        for i, segments in enumerate(batches):
            for j, _, _ in segments:
                live[j].users.append(job)
            index = np.concatenate([live[j].index[a:b] for j, a, b in segments])
            self.ready.append((k, index, job, i))

    def served(self, up_to: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(images, index) of the batches planned by window ``up_to`` (all when None),
        in order, waiting for each to be gathered."""
        while self.ready and (up_to is None or self.ready[0][0] <= up_to):
            _, index, job, i = self.ready.popleft()
            yield job.result()[i], index

    def close(self) -> None:
        """Stop the threads, dropping the work not started."""
        self.pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Live:
    """A window being read: the buffer its chunks are decompressed into, those jobs,
    and the jobs gathering batches out of it."""

    buffer: np.ndarray
    window: Window
    jobs: list[Future[np.ndarray]]
    users: list[Future[list[np.ndarray]]] = field(default_factory=list)

    @property
    def index(self) -> np.ndarray:
        return self.window.index

    @property
    def slots(self) -> np.ndarray:
        return self.window.slots


def _recycle(live: dict[int, _Live], free: list[np.ndarray], first_open: int) -> None:
    """Move to ``free`` the buffers of windows before ``first_open`` (no batch to come
    reads them) once their chunks are decompressed and their batches gathered: at once
    when they are, and, while PIPELINE_DEPTH windows are in use, the oldest after
    waiting. (A window may have no batch of this process to wait for, but its chunks are
    still being written into the buffer.)"""
    for j in sorted(live):
        if j >= first_open:
            break
        pending: list[Future[Any]] = [*live[j].jobs, *live[j].users]
        if len(live) < PIPELINE_DEPTH and not all(job.done() for job in pending):
            break
        for job in pending:
            job.result()
        free.append(live.pop(j).buffer)


def _gather_batches(
    batches: list[list[tuple[list[Future[np.ndarray]], np.ndarray, np.ndarray]]],
    shape: tuple[int, ...],
) -> list[np.ndarray]:
    """Batches gathered out of window buffers. Each batch is a list of parts: (the jobs
    filling a buffer, the buffer, the rows to take from it), waited for in turn."""
    done: set[int] = set()
    out = []
    for parts in batches:
        batch = np.empty((sum(len(rows) for _, _, rows in parts), *shape), np.uint8)
        start = 0
        for jobs, buffer, rows in parts:
            if id(jobs) not in done:
                for job in jobs:
                    job.result()
                done.add(id(jobs))
            # mode="clip": with the default, numpy gathers into a temporary and copies it
            np.take(buffer, rows, axis=0, out=batch[start : start + len(rows)], mode="clip")
            start += len(rows)
        out.append(batch)
    return out
