"""``imgclass data fetch quickdraw|mnist``: download datasets from their public homes."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imgclass.data.download import Downloaded, RetryPolicy

KIND_HELP = (
    "bitmap: 28x28 bitmaps (.npy); simplified: strokes in 0..255, RDP-simplified (.ndjson); "
    "raw: strokes with timing (.ndjson); binary: simplified strokes, packed (.bin). "
    "simplified and raw files share a name: fetch them into different folders"
)


def register(sub: Any) -> None:
    """Add ``fetch`` and its ``quickdraw`` and ``mnist`` subcommands under ``imgclass data``."""
    parser = sub.add_parser(
        "fetch",
        help="download Quick, Draw! or MNIST files",
        description=(
            "Download dataset files from their public homes: resumable (run it again to "
            "continue), retried, verified, written atomically; files already there and "
            "verified are not downloaded again."
        ),
    )
    which = parser.add_subparsers(dest="dataset", metavar="DATASET")
    _add_quickdraw(which)
    _add_mnist(which)
    parser.set_defaults(func=lambda _args: _no_dataset(parser))


def _add_quickdraw(which: Any) -> None:
    q = which.add_parser(
        "quickdraw",
        help="Quick, Draw! files, one per category",
        description="Download Quick, Draw! files, one per category, from Google's public bucket.",
    )
    q.add_argument("--categories", help="comma-separated category names, or 'all'")
    q.add_argument(
        "--kind",
        choices=["bitmap", "simplified", "raw", "binary"],
        default="bitmap",
        help=KIND_HELP,
    )
    q.add_argument("--out", help="folder to download into")
    q.add_argument("--list", action="store_true", help="print the 345 category names and exit")
    q.add_argument(
        "--base-url",
        help="root holding numpy_bitmap/, simplified/, raw/, binary/ "
        "(default: $IMGCLASS_QUICKDRAW_URL, else Google's bucket)",
    )
    _add_common(q)
    q.set_defaults(func=run_quickdraw)


def _add_mnist(which: Any) -> None:
    m = which.add_parser(
        "mnist",
        help="the four MNIST IDX files",
        description="Download MNIST's four IDX .gz files, verified by size and md5.",
    )
    m.add_argument("--out", required=True, help="folder to download into")
    m.add_argument(
        "--base-url",
        action="append",
        help="mirror root; repeat to give fallbacks (default: $IMGCLASS_MNIST_URL, "
        "comma-separated, else known public mirrors)",
    )
    _add_common(m)
    m.set_defaults(func=run_mnist)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--retries", type=int, default=5, help="tries in a row without progress (default 5)"
    )
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for data (default 60)"
    )
    p.add_argument("--json", action="store_true", help="print the files as one JSON object")


def run_quickdraw(args: argparse.Namespace) -> int:
    from imgclass.data.download import fetch_quickdraw
    from imgclass.data.quickdraw_names import CATEGORIES
    from imgclass.errors import ConfigError

    if args.list:
        if args.json:
            print(json.dumps({"categories": list(CATEGORIES)}))
        else:
            print("\n".join(CATEGORIES))
        return 0
    if not args.categories or not args.out:
        raise ConfigError("give --categories (names or 'all') and --out, or --list")
    files = fetch_quickdraw(
        args.categories, args.kind, args.out, base_url=args.base_url, retry=_retry(args)
    )
    return _report(files, args.json)


def run_mnist(args: argparse.Namespace) -> int:
    from imgclass.data.download import fetch_mnist

    files = fetch_mnist(args.out, mirrors=args.base_url, retry=_retry(args))
    return _report(files, args.json)


def _retry(args: argparse.Namespace) -> RetryPolicy:
    from imgclass.data.download import RetryPolicy

    return RetryPolicy(attempts=args.retries, timeout=args.timeout)


def _report(files: list[Downloaded], as_json: bool) -> int:
    """Print the files (path, size, sha256, what was checked): one JSON object, or one
    line each and a summary that says how they were verified."""
    if as_json:
        print(json.dumps({"files": [f.to_json() for f in files]}))
        return 0
    for f in files:
        status = "already there" if f.skipped else "downloaded"
        print(f"{f.path}  {f.size:,} bytes  sha256 {f.sha256}  ({status}; {f.verification()})")
    print(summary(files))
    return 0


def summary(files: list[Downloaded]) -> str:
    """``2 files: 1 downloaded, 1 already there; 1 verified by md5, 1 checked by size
    only (no checksum published)``."""
    from imgclass.text import plural

    fetched = sum(not f.skipped for f in files)
    head = (
        f"{plural(len(files), 'file')}: {fetched} downloaded, {len(files) - fetched} already there"
    )
    ways: dict[str, int] = {}
    for f in files:
        digests = [c for c in f.checked if c != "size"]
        if digests:
            way = f"verified by {' and '.join(digests)}"
        else:
            way = "checked by size only (no checksum published)" if f.checked else "not checked"
        ways[way] = ways.get(way, 0) + 1
    return "; ".join([head, ", ".join(f"{n} {way}" for way, n in ways.items())]) if files else head


def _no_dataset(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2
