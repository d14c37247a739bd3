"""Build the small real datasets shipped inside the package (src/imgclass/builtin/).

Run from the repository root: ``python bench/make_builtin.py [--shared ../shared/data]``.
The outputs are committed; this script documents exactly how they were made.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

PICTIONARY = [
    "apple",
    "sun",
    "tree",
    "house",
    "car",
    "cat",
    "fish",
    "star",
    "umbrella",
    "flower",
    "moon",
    "airplane",
    "bicycle",
    "clock",
    "eye",
    "cup",
    "shoe",
    "cloud",
    "lightning",
    "smiley face",
]
OUT = Path(__file__).resolve().parents[1] / "src" / "imgclass" / "builtin"


def make_digits(shared: Path, per_digit_train: int = 200, per_digit_test: int = 50) -> None:
    """The first N of each digit from MNIST's official train and test sets."""
    m = np.load(shared / "mnist.npz")
    parts = {}
    for split, n in (("train", per_digit_train), ("test", per_digit_test)):
        x, y = m[f"x_{split}"], m[f"y_{split}"]
        idx = np.sort(np.concatenate([np.flatnonzero(y == d)[:n] for d in range(10)]))
        parts[f"x_{split}"], parts[f"y_{split}"] = x[idx], y[idx].astype(np.int16)
    np.savez_compressed(OUT / "digits.npz", **parts)


def make_doodles(shared: Path) -> None:
    """All 80 bitmaps of the 20 Pictionary categories, and their raw strokes."""
    q = np.load(shared / "quickdraw_345x80.npz")
    classes = [str(c) for c in q["classes"]]
    wanted = [classes.index(c) for c in sorted(PICTIONARY)]
    keep = np.isin(q["y"], wanted)
    remap = {old: new for new, old in enumerate(wanted)}
    y = np.array([remap[int(v)] for v in q["y"][keep]], dtype=np.int16)
    np.savez_compressed(
        OUT / "doodles.npz", x=q["x"][keep], y=y, classes=np.array(sorted(PICTIONARY))
    )
    with (
        gzip.open(shared / "quickdraw_strokes_raw.ndjson.gz", "rt") as src,
        gzip.open(OUT / "doodles_strokes.ndjson.gz", "wt") as dst,
    ):
        for line in src:
            if json.loads(line)["word"] in PICTIONARY:
                dst.write(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    make_digits(args.shared)
    make_doodles(args.shared)
    for f in sorted(OUT.iterdir()):
        print(f"{f.name}: {f.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
