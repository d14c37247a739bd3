"""Where the trainer's batches come from: arrays in memory, or a prepared dataset streamed.

Every source yields ``(inputs, labels)`` per batch, ``inputs`` being ``(images,)`` (uint8
(b, H, W[, C]), converted and augmented on the training device) or ``(sequences,
lengths)`` (float32 (b, T, F), int64 (b,)). Under data parallelism each of ``world``
processes takes its own shard of one shared, seeded permutation (as
``DistributedSampler`` does): the shards are padded to equal length so that every
process runs the same number of steps.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from imgclass.data.store import PreparedDataset

Batch = tuple[tuple[Any, ...], Any]  # ((images,) or (sequences, lengths)), labels


def batch_bounds(n: int, batch_size: int, train: bool) -> list[tuple[int, int]]:
    """(start, stop) of each batch over ``n`` examples. In training a last batch of one
    example joins the one before (batch norm cannot train on a single example)."""
    starts = list(range(0, n, batch_size))
    if train and len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


def shard(order: np.ndarray, rank: int, world: int, pad: bool) -> np.ndarray:
    """This process's share of ``order``: every ``world``-th example from ``rank``; with
    ``pad`` the order is first wrapped around to a multiple of ``world``."""
    if world == 1:
        return order
    if pad and len(order) % world:
        order = np.resize(order, -(-len(order) // world) * world)
    return order[rank::world]


class ArrayBatches:
    """Batches from in-memory arrays.

    inputs: (images uint8 (n, H, W[, C]),) or (sequences float32 (n, T, F), lengths (n,));
    labels: int64 (n,). Sequence batches are cut to their longest member.
    """

    def __init__(self, inputs: tuple[np.ndarray, ...], labels: np.ndarray) -> None:
        import torch

        if not 1 <= len(inputs) <= 2 or any(len(a) != len(labels) for a in inputs):
            raise ValueError("inputs must be (images,) or (sequences, lengths) as long as labels")
        self.kind = "image" if len(inputs) == 1 else "sequence"
        self.streamed = False
        self.inputs = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def steps(self, batch_size: int, world: int = 1) -> int:
        """Batches each process gets per training epoch."""
        n = -(-len(self) // world)
        return len(batch_bounds(n, batch_size, train=True))

    def epoch(
        self, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1, train: bool = True
    ) -> Iterator[Batch]:
        """One pass: shuffled by ``seed`` and padded to equal shards when ``train``;
        in order, unpadded, when evaluating."""
        n = len(self)
        if train:
            rng = np.random.default_rng(seed)
            order = rng.permutation(n)
        else:
            order = np.arange(n)
        mine = shard(order, rank, world, pad=train)
        for start, stop in batch_bounds(len(mine), batch_size, train):
            yield self.take(mine[start:stop])

    def take(self, idx: np.ndarray) -> Batch:
        """The batch of examples ``idx``."""
        import torch

        index = torch.from_numpy(idx)
        labels = self.labels[index]
        if self.kind == "image":
            return (self.inputs[0][index],), labels
        lengths = self.inputs[1][index]
        longest = max(1, int(lengths.max())) if len(lengths) else 1
        return (self.inputs[0][index, :longest], lengths), labels

    def first(self, k: int = 2) -> tuple[np.ndarray, ...]:
        """The first ``k`` examples' inputs as numpy arrays (to trace an ONNX export)."""
        return tuple(a[:k].numpy() for a in self.inputs)


class StoreBatches:
    """Image batches read from a prepared dataset with bounded memory.

    The order is the store's own shuffle (``iter_batches``: chunks in a random order,
    examples shuffled within a window), read by its background pipeline.
    ``mask``: bool (n,), the examples to use (the others being held out); batches are
    refilled to full size after masking, and processes take every ``world``-th one.
    Training drops the last, partial batch so that every process runs as many steps.
    """

    kind = "image"
    streamed = True

    def __init__(self, ds: PreparedDataset, split: str, mask: np.ndarray | None = None) -> None:
        self.ds = ds
        self.split = split
        self.mask = None if mask is None or mask.all() else mask

    def __len__(self) -> int:
        return self.ds.size(self.split) if self.mask is None else int(self.mask.sum())

    def steps(self, batch_size: int, world: int = 1) -> int:
        """Batches each process gets per training epoch."""
        return max(1, len(self) // batch_size // world)

    def epoch(
        self, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1, train: bool = True
    ) -> Iterator[Batch]:
        """One pass over the split (see ``ArrayBatches.epoch``)."""
        import torch

        from imgclass.data.store import BatchPlan

        plan = BatchPlan(
            batch_size,
            shuffle=train,
            seed=seed,
            drop_last=train,
            keep=self.mask,
            rank=rank,
            world=world,
        )
        batches = self.ds.iter_batches(self.split, plan)
        limit = self.steps(batch_size, world) if train else None
        try:
            for i, (images, labels, _) in enumerate(batches):
                if limit is not None and i >= limit:
                    break
                yield (torch.from_numpy(images),), torch.from_numpy(labels)
        finally:
            batches.close()  # stops the reading threads at once, also when left early

    def first(self, k: int = 2) -> tuple[np.ndarray, ...]:
        """The first ``k`` images (to trace an ONNX export)."""
        return (self.ds.images(self.split)[:k],)


def stratified_holdout(
    labels: np.ndarray, fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) sorted index arrays: ``fraction`` of each class held out (at least
    one example of classes with two or more), chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = int(round(fraction * len(members)))
        k = min(max(k, 1 if len(members) > 1 else 0), len(members) - 1)
        held.append(rng.choice(members, size=k, replace=False))
    out = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(labels)), out), out


def limit_steps(batches: Iterator[Batch], limit: int | Callable[[], int]) -> Iterator[Batch]:
    """The first ``limit`` batches (all when 0); the source is closed when left early,
    so that a streamed one stops its reading threads. limit may be a function, read
    after each batch: a time budget can give a cut epoch more steps while it runs."""
    current = limit if callable(limit) else (lambda: limit)
    if current() <= 0:
        yield from batches
        return
    try:
        for i, batch in enumerate(batches):
            yield batch
            if i + 1 >= current():
                break
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def pinned(batch: Batch) -> Batch:
    """The batch in page-locked memory, so that its copy to a GPU can be asynchronous."""
    inputs, labels = batch
    return tuple(t.pin_memory() for t in inputs), labels.pin_memory()


def prefetch(batches: Iterator[Batch], depth: int, pin: bool = False) -> Iterator[Batch]:
    """Produce batches in a background thread, ``depth`` ahead (0: in the caller's thread).

    Indexing tensors and decompressing store chunks release the GIL, so loading the next
    batch overlaps with training on the current one. pin: page-lock each batch there
    (for a CUDA device: the copies in ``to_device`` then overlap with computation).

    The background thread runs torch on one intra-op thread: OpenMP gives every thread
    that calls into torch its own pool, and a second pool of busy-waiting workers beside
    the training step's took a whole core from it (the trainer ran at 0.59 of a bare
    loop on 2 cores; 0.94 with this). torch writes that count process-wide too, for
    threads that have not sized their pool yet: ``trainer.configure_threads`` sizes the
    training thread's before this thread starts.
    """
    if pin:
        batches = (pinned(b) for b in batches)
    if depth <= 0:
        yield from batches
        return
    box: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        import torch

        torch.set_num_threads(1)  # this thread's own OpenMP pool; see above
        try:
            for item in batches:
                if stop.is_set():
                    return
                box.put(item)
            box.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            box.put(exc)

    thread = threading.Thread(target=work, daemon=True, name="imgclass-batches")
    thread.start()
    try:
        while (item := box.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                box.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def to_device(
    inputs: tuple[torch.Tensor, ...], device: torch.device, channels_last: bool = False
) -> tuple[torch.Tensor, ...]:
    """Images uint8 (b, H, W[, C]) -> float32 (b, C, H, W) in [0, 1] on ``device`` (in
    channels-last memory order when asked); sequence inputs are moved as they are.
    The copy is non-blocking: asynchronous from pinned memory to a GPU."""
    import torch

    if len(inputs) == 2:
        return tuple(t.to(device, non_blocking=True) for t in inputs)
    x = inputs[0].to(device, non_blocking=True)
    x = x.to(torch.float32).div_(255.0)
    if channels_last:
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        return (x.contiguous(memory_format=torch.channels_last),)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
    return (x,)
