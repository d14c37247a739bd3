"""Progress on stderr: a bar on a terminal, log lines when stderr is a file or a pipe,
nothing with ``--quiet``.

A bar redrawn with carriage returns is useless in a log file, and hiding it left a log
empty for as long as an epoch lasts (many minutes on a large dataset). Where the bar is
hidden because stderr is not a terminal, ``progress`` returns a ``LogBar`` instead: a
line on the ``imgclass.progress`` logger every ``LOG_INTERVAL`` seconds (30, or
``$IMGCLASS_PROGRESS_SECONDS``) while the work goes on. The callers log their own line
when a step ends (an epoch, a trial, a file). ``--quiet`` silences both.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("imgclass.progress")

_QUIET = False
# Seconds between two lines of a LogBar; $IMGCLASS_PROGRESS_SECONDS changes it.
LOG_INTERVAL = 30.0


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = quiet


def is_quiet() -> bool:
    """Whether ``--quiet`` was given: no bars, no progress lines."""
    return _QUIET


def progress(iterable: Any = None, **kwargs: Any) -> Any:
    """A tqdm bar (``desc``, ``total``, ``unit``...) on a terminal; a ``LogBar`` when
    stderr is not one; a silent bar when quiet or when the caller disables it."""
    from tqdm import tqdm

    if "disable" not in kwargs and not _QUIET and not sys.stderr.isatty():
        return LogBar(iterable, **kwargs)
    kwargs.setdefault("disable", _QUIET or not sys.stderr.isatty())
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("file", sys.stderr)
    return tqdm(iterable, **kwargs)


class LogBar:
    """The part of tqdm's interface imgclass uses, reporting through logging: at most one
    line per ``LOG_INTERVAL`` seconds, ``desc: done/total unit (pct), rate, postfix``."""

    disable = False  # callers that feed a postfix only when the bar shows: it does

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        desc: str | None = None,
        total: float | None = None,
        initial: float = 0,
        unit: str = "it",
        unit_scale: bool = False,
        unit_divisor: int = 1000,
        **_: Any,  # tqdm's display options (leave, ncols, file...) mean nothing here
    ) -> None:
        self.iterable = iterable
        self.desc = desc or ""
        self.total = total if total is not None else _length(iterable)
        self.n = self.start = initial
        self.unit = unit
        self.scale = unit_divisor if unit_scale else 0
        self.postfix = ""
        self.started = self.shown = time.monotonic()

    def __enter__(self) -> LogBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.shown >= _interval():
            self.shown = now
            log.info("%s", self.line(now))

    # ``refresh`` is accepted (and ignored) to keep tqdm's signature: the line is logged
    # on the next interval anyway.
    def set_postfix(self, refresh: bool = True, **values: Any) -> None:  # noqa: ARG002
        self.postfix = " ".join(f"{k} {v}" for k, v in values.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:  # noqa: ARG002
        self.desc = desc or ""

    def close(self) -> None:
        """Nothing to clear: the caller logs its own line when the work is done."""

    def line(self, now: float) -> str:
        """``epoch 1/10: 12,800/60,000 samples (21%), 450 samples/s, loss 0.523``."""
        unit = self.unit.strip()
        done = self._amount(self.n)
        if self.total:
            done += f"/{self._amount(self.total)}"
        done += "" if self.scale else f" {unit}"
        if self.total:
            done += f" ({self.n / self.total:.0%})"
        rate = (self.n - self.start) / max(now - self.started, 1e-9)
        speed = f"{self._amount(rate)}{'' if self.scale else ' ' + unit}/s"
        parts = [done, speed, *([self.postfix] if self.postfix else [])]
        return (f"{self.desc}: " if self.desc else "") + ", ".join(parts)

    def _amount(self, value: float) -> str:
        """``12,800``, or ``43.1MB`` for scaled units (bytes)."""
        if self.scale:
            from tqdm import tqdm

            return str(tqdm.format_sizeof(value, suffix=self.unit.strip(), divisor=self.scale))
        return f"{value:,.0f}"


def _interval() -> float:
    """LOG_INTERVAL, or $IMGCLASS_PROGRESS_SECONDS when it is a number >= 0."""
    try:
        value = float(os.environ.get("IMGCLASS_PROGRESS_SECONDS", LOG_INTERVAL))
    except ValueError:
        return LOG_INTERVAL
    return value if value >= 0 else LOG_INTERVAL


def _length(iterable: Any) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None
