"""Checkpoints: RUNDIR/checkpoints/last.pt, written after every epoch, atomically.

The content is tensors, numbers, strings, lists and dicts only, so it loads with
``torch.load(weights_only=True)`` (nothing unpickled): ``epoch`` (epochs done),
``phase`` (index of the training phase the optimizer belongs to), ``model``,
``optimizer``, ``scheduler`` (state dicts), ``rng`` (torch's CPU and CUDA generator
states as uint8 tensors), ``history`` (one dict of floats per epoch), ``best``
(``epoch``, ``score``, ``model``: the best weights so far), ``seconds`` and ``config``.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from imgclass.errors import ModelError

log = logging.getLogger(__name__)

LAST = "last.pt"


def rng_state() -> dict[str, Any]:
    """torch's global generator states (CPU, and every CUDA device) as tensors."""
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    # torch leaves is_initialized unannotated
    cuda_initialized = cast(Callable[[], bool], torch.cuda.is_initialized)
    if torch.cuda.is_available() and cuda_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, state: dict[str, Any]) -> Path:
    """Write ``folder/last.pt`` through a temporary file renamed into place, so a run
    killed while saving keeps the previous checkpoint intact."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LAST
    tmp = folder / f".{LAST}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The state in ``folder/last.pt`` (None when there is none); ModelError when the
    file cannot be read as a weights-only checkpoint."""
    import torch

    path = folder / LAST
    if not path.is_file():
        return None
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise ModelError(
            f"{path}: cannot read the checkpoint ({exc}); delete it to start over"
        ) from None
    missing = [k for k in ("epoch", "model", "optimizer", "history", "best") if k not in state]
    if missing:
        raise ModelError(f"{path}: not an imgclass checkpoint (missing {', '.join(missing)})")
    return state
