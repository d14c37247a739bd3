"""Wording for messages people read."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 file``, ``2 files``, ``0 files``; ``many`` for irregular plurals
    (``plural(n, "class", "classes")``)."""
    return f"{n} {word}" if n == 1 else f"{n} {many or word + 's'}"
