"""Which examples an epoch reads, in what order and in which batches: ``BatchPlan``.

Pure numpy, no files: the reader turns a plan into index arrays (``batch_indices``)
and the pipeline into batches of images (``iter_batches``), both from the same steps,
so the two always agree.

The order is random at two levels with bounded memory: chunks in a random order,
a window of them at a time, and the examples of each window shuffled together. The
store was shuffled across classes when written, so every chunk already mixes classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

WINDOW_BYTES = 16 << 20  # decompressed images shuffled together, by default

# (window number, start, stop): a stretch of a window's served examples in a batch
Segment = tuple[int, int, int]


@dataclass
class Window:
    """One window of an epoch: its chunks, and its examples in the order they are served
    (``index``: their numbers in the split; ``slots``: their rows in a buffer holding
    chunk j from row j * rows)."""

    chunks: np.ndarray
    index: np.ndarray
    slots: np.ndarray


@dataclass
class Step:
    """What one window brings to an epoch: the window (None for a last, partial batch),
    the batches of this process it completes, each a list of segments (a batch may begin
    in earlier windows), and ``first_open``, the window where the next batch starts: no
    batch to come reads a window before it."""

    window: Window | None
    batches: list[list[Segment]]
    first_open: int


@dataclass(frozen=True, eq=False)
class BatchPlan:
    """How to cut a split into batches; the same plan gives the same batches.

    ``shuffle`` with ``seed``: the two-level random order (else the stored order);
    ``drop_last``: leave out a last, partial batch; ``window``: chunks shuffled together
    (by default as many as fit in WINDOW_BYTES, at least 2); ``keep``: bool (n,), the
    examples to use, dropped after shuffling so that those kept come in the same order
    whatever the mask, batches still full; ``rank`` of ``world``: only every
    ``world``-th batch from ``rank`` (the processes of a data-parallel run share one
    order).
    """

    batch_size: int
    shuffle: bool = True
    seed: int = 0
    drop_last: bool = False
    window: int | None = None
    keep: np.ndarray | None = None
    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be at least 1 chunk, got {self.window}")
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank must be in [0, {self.world}), got {self.rank}")

    def chunks_per_window(self, chunk_bytes: int) -> int:
        """``window``, or as many chunks of ``chunk_bytes`` as fit in WINDOW_BYTES (at least 2)."""
        if self.window is not None:
            return self.window
        return max(2, WINDOW_BYTES // chunk_bytes)

    def windows(self, n: int, rows: int, per_window: int) -> Iterator[Window]:
        """The order: the windows of an epoch over ``n`` examples stored ``rows`` to a
        chunk, ``per_window`` chunks each."""
        if self.keep is not None and self.keep.shape != (n,):
            raise ValueError(f"keep must be a bool array of shape ({n},), got {self.keep.shape}")
        rng = np.random.default_rng(self.seed)
        n_chunks = -(-n // rows)
        order = rng.permutation(n_chunks) if self.shuffle else np.arange(n_chunks)
        for w in range(0, n_chunks, per_window):
            yield self._window(order[w : w + per_window], n, rows, rng)

    def _window(self, chunks: np.ndarray, n: int, rows: int, rng: np.random.Generator) -> Window:
        """The examples of ``chunks`` in the order they are served, less those not kept."""
        sizes = np.minimum(rows, n - chunks * rows)
        slots = np.concatenate([j * rows + np.arange(k) for j, k in enumerate(sizes)])
        index = np.repeat(chunks * rows - np.arange(len(chunks)) * rows, sizes) + slots
        served = rng.permutation(len(index)) if self.shuffle else np.arange(len(index))
        index, slots = index[served], slots[served]
        if self.keep is not None:
            kept = self.keep[index]
            index, slots = index[kept], slots[kept]
        return Window(chunks, index, slots)

    def steps(self, n: int, rows: int, per_window: int) -> Iterator[Step]:
        """The batch boundaries: per window, the batches of this process it completes."""
        held: list[Segment] = []  # the batch being filled
        count = number = 0  # examples in it; batches completed before it
        for k, w in enumerate(self.windows(n, rows, per_window)):
            done: list[list[Segment]] = []
            a, m = 0, len(w.index)
            while a < m:
                take = min(self.batch_size - count, m - a)
                held.append((k, a, a + take))
                count, a = count + take, a + take
                if count == self.batch_size:
                    done.append(held)
                    held, count = [], 0
            yield Step(w, self._mine(done, number), held[0][0] if held else k + 1)
            number += len(done)
        if held and not self.drop_last:
            yield Step(None, self._mine([held], number), held[0][0])

    def _mine(self, batches: list[list[Segment]], number: int) -> list[list[Segment]]:
        """This process's share of ``batches``, numbered from ``number`` in the epoch."""
        return [b for i, b in enumerate(batches, number) if i % self.world == self.rank]

    def indices(self, n: int, rows: int, per_window: int) -> Iterator[np.ndarray]:
        """The index arrays, int64 (b,), of this process's batches, in order."""
        served: dict[int, np.ndarray] = {}
        for k, step in enumerate(self.steps(n, rows, per_window)):
            if step.window is not None:
                served[k] = step.window.index
            for segments in step.batches:
                yield np.concatenate([served[j][a:b] for j, a, b in segments])
            for j in [j for j in served if j < step.first_open]:
                del served[j]
