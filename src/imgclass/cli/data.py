"""``imgclass data ...``: prepare, inspect and fetch datasets."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "data",
        help="prepare, inspect and download datasets",
        description="Prepare, inspect and download datasets.",
    )
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    from imgclass.cli import data_fetch, data_prepare

    data_prepare.register(sub)
    data_fetch.register(sub)
    parser.set_defaults(func=lambda _args: _no_subcommand(parser))


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2
