"""Data parallelism under ``torchrun``: which process this is, and the few collectives the
trainer needs. Without torchrun (no ``WORLD_SIZE`` in the environment) everything here is
a no-op for a single process.

``torchrun --nproc_per_node N -m imgclass train ...`` starts N processes; they join
one process group (gloo on CPU, NCCL on CUDA), each trains on its shard of every
epoch, gradients are averaged by ``DistributedDataParallel``, and only rank 0 writes
checkpoints and the bundle.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imgclass.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    """This process's place: rank among ``world`` processes, GPU index ``local_rank``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def main(self) -> bool:
        """Whether this process writes files and talks to the user."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


SINGLE = Dist()


def pick_device(name: str, dist: Dist = SINGLE) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; under torchrun, this process's GPU."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but torch sees no CUDA device; use device=cpu or auto")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    index = dist.local_rank % max(1, torch.cuda.device_count())
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def init_distributed(device_name: str) -> Dist:
    """Join torchrun's process group when launched by it (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    import torch
    import torch.distributed as td

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name != "cpu" and torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if cuda:  # before NCCL starts: each process on its own GPU, not all on GPU 0
        torch.cuda.set_device(local % max(1, torch.cuda.device_count()))
    if not td.is_initialized():
        td.init_process_group(backend=backend)
    log.info("process %d of %d (%s)", rank, world, backend)
    return Dist(rank, world, local, backend)


def shutdown(dist: Dist) -> None:
    """Leave the process group (after a last barrier, so rank 0 finishes its files)."""
    if dist.active:
        import torch.distributed as td

        if td.is_initialized():
            td.barrier()
            td.destroy_process_group()


def barrier(dist: Dist) -> None:
    if dist.active:
        import torch.distributed as td

        td.barrier()


def all_reduce_sum(values: list[float], dist: Dist, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over every process (float64)."""
    if not dist.active:
        return values
    import torch
    import torch.distributed as td

    t = torch.tensor(values, dtype=torch.float64, device=device)
    td.all_reduce(t)
    return [float(v) for v in t.cpu()]


def all_gather_objects(value: Any, dist: Dist) -> list[Any]:
    """``value`` from every process, in rank order (small JSON-like values only)."""
    if not dist.active:
        return [value]
    import torch.distributed as td

    out: list[Any] = [None] * dist.world
    td.all_gather_object(out, value)
    return out


def sync_buffers(model: nn.Module, dist: Dist) -> None:
    """Copy rank 0's buffers (batch-norm statistics) to every process, so that all
    evaluate, checkpoint and export the same model."""
    if not dist.active:
        return
    import torch.distributed as td

    for buffer in model.buffers():
        td.broadcast(buffer, src=0)


def weights_digest(model: nn.Module) -> str:
    """sha256 of every parameter and buffer, to check that processes agree."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def wrap(model: nn.Module, dist: Dist, device: torch.device) -> nn.Module:
    """The model as the training step calls it: DistributedDataParallel under torchrun
    (re-wrapped at each training phase, since the trainable parameters change)."""
    if not dist.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
