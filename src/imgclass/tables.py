"""Plain-text tables for people: the listings that ``imgclass runs`` and ``imgclass
models list`` print."""

from __future__ import annotations

from collections.abc import Collection, Sequence


def format_table(
    head: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Collection[int] = (),
    rule: bool = False,
) -> str:
    """``head`` and ``rows`` (cells as strings) in columns two spaces apart, each as wide
    as its widest cell, no trailing spaces.

    right: indices of the columns aligned to the right (numbers); rule: a line of dashes
    under the head.
    """
    widths = [max(len(cell) for cell in column) for column in zip(head, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    lines = [line(head), *(["  ".join("-" * w for w in widths)] if rule else [])]
    return "\n".join([*lines, *(line(row) for row in rows)])
