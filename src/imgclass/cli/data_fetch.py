"""``imgclass data fetch quickdraw|mnist``: download datasets from their public homes."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from imgclass.errors import DownloadError

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist",
    "https://storage.googleapis.com/cvdf-datasets/mnist",
)
# md5 of the original files, as published with torchvision's MNIST dataset class.
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "fetch",
        help="download Quick, Draw! or MNIST files",
        description="Download dataset files: resumable, retried, verified, atomic.",
    )
    which = p.add_subparsers(dest="dataset", metavar="DATASET")
    q = which.add_parser(
        "quickdraw",
        help="Quick, Draw! files per category",
        description="Download Quick, Draw! category files from Google's public bucket.",
    )
    q.add_argument("--categories", help="comma-separated category names, or 'all'")
    q.add_argument(
        "--kind",
        choices=["bitmap", "simplified", "raw", "binary"],
        default="bitmap",
        help="bitmap: 28x28 .npy; simplified/raw: stroke .ndjson; binary: .bin",
    )
    q.add_argument("--out", help="folder to download into")
    q.add_argument("--list", action="store_true", help="print the 345 category names and exit")
    q.add_argument("--base-url", help="mirror root (default: Google's; env IMGCLASS_QUICKDRAW_URL)")
    q.add_argument("--retries", type=int, default=5)
    q.add_argument("--json", action="store_true", help="print the files as JSON")
    q.set_defaults(func=run_quickdraw)
    m = which.add_parser(
        "mnist",
        help="the four MNIST IDX files",
        description="Download MNIST's four IDX .gz files, verified by md5.",
    )
    m.add_argument("--out", required=True, help="folder to download into")
    m.add_argument(
        "--base-url", help="mirror root (default: known mirrors; env IMGCLASS_MNIST_URL)"
    )
    m.add_argument("--retries", type=int, default=5)
    m.add_argument("--json", action="store_true", help="print the files as JSON")
    m.set_defaults(func=run_mnist)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _report(files: list[Path], as_json: bool) -> int:
    from imgclass.data.download import file_digest

    rows: list[dict[str, Any]] = [
        {"path": str(f), "size": f.stat().st_size, "sha256": file_digest(f, "sha256")}
        for f in files
    ]
    if as_json:
        print(json.dumps({"files": rows}))
    else:
        for r in rows:
            print(f"{r['path']}  {r['size']:,} bytes  sha256 {r['sha256'][:16]}…")
    return 0


def run_quickdraw(args: argparse.Namespace) -> int:
    from imgclass.data.download import RetryPolicy, download
    from imgclass.data.quickdraw_names import (
        CATEGORIES,
        category_filename,
        category_url,
        resolve_categories,
    )
    from imgclass.errors import ConfigError

    if args.list:
        print("\n".join(CATEGORIES))
        return 0
    if not args.categories or not args.out:
        raise ConfigError("give --categories (or 'all') and --out, or --list")
    retry = RetryPolicy(attempts=args.retries)
    files = []
    for name in resolve_categories(args.categories):
        url = category_url(name, args.kind, args.base_url)
        files.append(
            download(url, Path(args.out) / category_filename(name, args.kind), retry=retry)
        )
    return _report(files, args.json)


def run_mnist(args: argparse.Namespace) -> int:
    from imgclass.data.download import Expected, RetryPolicy, download

    base = args.base_url or os.environ.get("IMGCLASS_MNIST_URL")
    mirrors = [base] if base else list(MNIST_MIRRORS)
    retry = RetryPolicy(attempts=args.retries)
    files = []
    for name, md5 in MNIST_FILES.items():
        errors = []
        for mirror in mirrors:
            try:
                files.append(
                    download(
                        f"{mirror.rstrip('/')}/{name}",
                        Path(args.out) / name,
                        Expected(md5=md5),
                        retry,
                    )
                )
                break
            except DownloadError as exc:
                errors.append(str(exc))
        else:
            raise DownloadError(f"{name}: every mirror failed: " + "; ".join(errors))
    return _report(files, args.json)
