"""Writing files and folders so that no reader ever sees half of one: write under a
temporary name beside the target, then rename it into place in one step (``os.replace``).

``replacing(path)`` and ``write_text`` / ``save_figure`` do it for one file,
``folder(dest)`` for a whole folder (a bundle, a report); ``safe_name`` turns a name
people chose (a study, an experiment) into one a file system takes.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def safe_name(name: str, fallback: str = "unnamed") -> str:
    """``name`` made usable as a file or folder name (runs of other characters become
    ``_``, no leading or trailing dots); ``fallback`` when nothing usable is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or fallback


def temp_path(path: Path) -> Path:
    """A hidden name next to ``path``, unique to this process and thread."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on failure it is
    removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def folder(dest: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a new, empty temporary folder beside ``dest`` to fill; when the block ends
    normally it becomes ``dest`` in one rename, when it raises it is removed and ``dest``
    is left as it was.

    overwrite: replace an existing ``dest`` (moved aside, then deleted, so that ``dest``
    is never missing nor half-written); when False, FileExistsError before the block runs.
    """
    dest = Path(dest)
    if not overwrite and (dest.exists() or dest.is_symlink()):
        raise FileExistsError(f"{dest} already exists")
    tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed process with our pid
    tmp.mkdir(parents=True)
    try:
        yield tmp
        _put_in_place(tmp, dest, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _put_in_place(tmp: Path, dest: Path, overwrite: bool) -> None:
    """Rename the finished folder ``tmp`` to ``dest``, replacing what is there when allowed."""
    if not (dest.exists() or dest.is_symlink()):
        os.replace(tmp, dest)
        return
    if not overwrite:
        raise FileExistsError(f"{dest} already exists")
    aside = dest.with_name(f".{dest.name}.old-{os.getpid()}-{threading.get_ident()}")
    os.replace(dest, aside)
    try:
        os.replace(tmp, dest)
    except OSError:
        os.replace(aside, dest)  # put the old one back
        raise
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """``path.write_text(text)``, all or nothing."""
    with replacing(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_figure(fig: Any, path: str | Path, dpi: int = 110, *, close: bool = False) -> Path:
    """A matplotlib figure as PNG, all or nothing, its folder made if needed.

    close: close the figure afterwards (also when writing failed), freeing pyplot's memory;
    by default it is left open.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        if close:
            import matplotlib.pyplot as plt

            plt.close(fig)
    return path


def process_alive(pid: int | None) -> bool:
    """Whether a process with this id exists (it may belong to another user)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
