"""The ``imgclass`` command: one entry point, one module per command group.

Each command module exposes ``register(subparsers)``, which adds its parser and
sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning
an exit status).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from imgclass import __version__
from imgclass.errors import ImgclassError

# Command modules, imported lazily so that `imgclass --help` stays fast.
COMMAND_MODULES = (
    "imgclass.cli.data",
    "imgclass.cli.train",
    "imgclass.cli.runs",
    "imgclass.cli.models",
    "imgclass.cli.tune",
    "imgclass.cli.evaluate",
    "imgclass.cli.quantize",
    "imgclass.cli.predict",
    "imgclass.cli.serve",
    "imgclass.cli.feedback",
    "imgclass.cli.retrain",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgclass",
        description=(
            "Build image classifiers for sketches (Quick, Draw!), digits (MNIST) and "
            "photos, compare them, and serve the best one."
        ),
    )
    parser.add_argument("--version", action="version", version=f"imgclass {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else (logging.WARNING if args.quiet else logging.INFO),
        format="%(levelname)s: %(message)s",
    )
    from imgclass.progress import set_quiet

    set_quiet(args.quiet)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ImgclassError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
