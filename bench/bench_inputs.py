"""Cost of the strict input checks (issue 10): parsing untrusted JSON with bounded depth
(``imgclass.safejson``) and the one strict strokes check (``imgclass.data.strokes``),
against the unchecked code they replace, side by side in one run.

  ndjson:   the first ``--lines`` lines of ../shared/data/quickdraw_strokes_raw.ndjson.gz,
            each parsed and validated as ``imgclass data prepare`` and ``imgclass predict``
            do (baseline: ``json.loads`` and the former per-stroke ``np.asarray`` check);
  requests: request bodies as ``/v1/predict`` reads them, parsed and (for strokes)
            validated (baseline: ``json.loads`` and the former ``parse_strokes``): a canvas
            drawing, the largest drawing the settings allow, a 3 MB base64 image;
  hostile:  5 MB bodies (the largest the server takes) made to be slow to scan: nested
            2.5 million deep, a million strings holding brackets, backslashes (baseline:
            ``json.loads`` until it raises or returns).
Prints a table and one JSON line; the ratio is ours / baseline time (best of --repeat).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from imgclass.data.sources.ndjson import parse_drawing, parse_json_line
from imgclass.serve.inputs import BadInput, parse_json_body, parse_strokes

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def old_ndjson(line: bytes) -> list[np.ndarray]:
    """What the ndjson reader did before: json.loads, then np.asarray per stroke."""
    strokes = json.loads(line)["drawing"]
    out = []
    for stroke in strokes:
        arr = np.asarray(stroke)
        if arr.ndim != 2 or arr.dtype.kind not in "iuf":
            raise ValueError("coordinates must be numbers")
        points = np.ascontiguousarray(arr.T, dtype=np.float32)
        if not np.isfinite(points).all():
            raise ValueError("finite")
        out.append(points)
    return out


def new_ndjson(line: bytes) -> list[np.ndarray]:
    return parse_drawing(parse_json_line(line, "bench", 1)["drawing"], "bench", "line 1")


def old_request(body: bytes) -> Any:
    """What /v1/predict did before: json.loads, then np.asarray(float32) per stroke."""
    data = json.loads(body)
    if "strokes" not in data:
        return data
    out = []
    for stroke in data["strokes"]:
        arr = np.asarray(stroke, dtype=np.float32).T
        if not np.all(np.isfinite(arr)) or np.abs(arr[:, :2]).max() > 1e6:
            raise ValueError("sensible size")
        out.append(arr)
    return out


def new_request(body: bytes) -> Any:
    data = parse_json_body(body)
    if "strokes" not in data:
        return data
    return parse_strokes(data["strokes"], 500, 20_000)


def old_hostile(body: bytes) -> None:
    with contextlib.suppress(ValueError, RecursionError):
        json.loads(body)


def new_hostile(body: bytes) -> None:
    with contextlib.suppress(BadInput):
        parse_json_body(body)


def hostile_cases() -> dict[str, list[bytes]]:
    half = 2_500_000
    return {
        "hostile: 5 MB nested 2.5 million deep": [b"[" * half + b"]" * half],
        "hostile: 5 MB of strings holding brackets": [b'["[' + b'", "[' * 1_000_000 + b'"]'],
        "hostile: 5 MB of backslashes, then 40 [": [b'["' + b"\\\\" * half + b'"]' + b"[" * 40],
    }


def best_seconds(
    fns: tuple[Callable[[Any], Any], ...], items: list[Any], repeat: int
) -> list[float]:
    """Best time of each function over ``items``, the functions taking turns (a noisy
    machine then slows both alike)."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            for item in items:
                fn(item)
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def drawing(rng: np.random.Generator, strokes: int, points: int) -> list[Any]:
    return [
        [rng.integers(0, 800, points).tolist(), rng.integers(0, 600, points).tolist()]
        for _ in range(strokes)
    ]


def request_cases(rng: np.random.Generator) -> dict[str, list[bytes]]:
    canvas = json.dumps({"strokes": drawing(rng, 12, 40)}).encode()
    largest = json.dumps({"strokes": drawing(rng, 40, 500)}).encode()  # 20,000 points
    image = json.dumps({"image_base64": base64.b64encode(rng.bytes(3_000_000)).decode()})
    return {
        "request: canvas drawing (480 points)": [canvas] * 200,
        "request: largest drawing (20,000 points)": [largest] * 5,
        "request: 3 MB base64 image": [image.encode()] * 3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with gzip.open(SHARED / "quickdraw_strokes_raw.ndjson.gz", "rb") as f:
        lines = [f.readline() for _ in range(args.lines)]
    cases: dict[str, tuple[list[bytes], Callable[[Any], Any], Callable[[Any], Any]]] = {
        f"ndjson: {len(lines)} raw Quick, Draw! lines": (lines, old_ndjson, new_ndjson)
    }
    for name, bodies in request_cases(np.random.default_rng(0)).items():
        cases[name] = (bodies, old_request, new_request)
    for name, bodies in hostile_cases().items():
        cases[name] = (bodies, old_hostile, new_hostile)
    print(f"{'what':<44} {'items':>6} {'baseline us':>12} {'ours us':>10} {'ratio':>6}")
    rows = {}
    for name, (items, old, new) in cases.items():
        base, ours = (t / len(items) * 1e6 for t in best_seconds((old, new), items, args.repeat))
        rows[name] = {"baseline_us": round(base, 1), "ours_us": round(ours, 1)}
        print(f"{name:<44} {len(items):>6} {base:>12.1f} {ours:>10.1f} {ours / base:>6.2f}")
    print(json.dumps({"bench": "inputs", "per_item": rows}))


if __name__ == "__main__":
    main()
