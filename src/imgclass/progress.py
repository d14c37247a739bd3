"""Progress bars on stderr: shown on a terminal, hidden with ``--quiet`` or when piped."""

from __future__ import annotations

import sys
from typing import Any

_QUIET = False


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = quiet


def progress(iterable: Any = None, **kwargs: Any) -> Any:
    """A tqdm bar (``desc``, ``total``, ``unit``...) that knows when to stay silent."""
    from tqdm import tqdm

    kwargs.setdefault("disable", _QUIET or not sys.stderr.isatty())
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("file", sys.stderr)
    return tqdm(iterable, **kwargs)
