"""Where one prediction's server-side time goes, in process (issue 10's 0.5 ms goal).

Times each stage of ``/v1/predict``'s work for a raw-strokes request (the first drawing
of the built-in doodles, as the page sends it) and for a 280x280 canvas PNG (multipart,
as bench_serve.py sends it), stage by stage with perf counters: body parsing, strokes
check, simplification, rendering, each recipe step, the model's input, the ONNX Runtime
run, the top-k and the JSON answer. Then the whole ``answer_predict`` work function
(what ``timing_ms.total`` and the HTTP layer add) for comparison. Each figure is the
median CPU time of ``--repeat`` runs on this thread (``time.thread_time``), which a
busy machine disturbs less than wall time; still compare stages within one run.

``--cprofile`` also prints cProfile's top functions for each request kind.
Run: python bench/profile_predict.py --bundle RUN/bundle [--repeat 2000] [--cprofile]
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import io
import json
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def median_us(fn: Callable[[], Any], repeat: int) -> float:
    """Median CPU time of ``fn`` on this thread in microseconds (after a few warm-up
    calls): CPU, not wall time, so that other processes on a busy machine count less."""
    for _ in range(min(20, repeat)):
        fn()
    times = np.empty(repeat)
    for i in range(repeat):
        t = time.thread_time_ns()
        fn()
        times[i] = time.thread_time_ns() - t
    return float(np.median(times) / 1e3)


def strokes_body() -> bytes:
    path = REPO / "src" / "imgclass" / "builtin" / "doodles_strokes.ndjson.gz"
    with gzip.open(path, "rt") as f:
        return json.dumps({"strokes": json.loads(f.readline())["drawing"]}).encode()


def canvas_png(mode: str = "L") -> bytes:
    """bench_serve.py's 280x280 canvas (gray, ``mode`` "L"), or as a browser's canvas
    export is (``mode`` "RGBA": black ink, transparent paper)."""
    q = np.load(REPO / "src" / "imgclass" / "builtin" / "doodles.npz")["x"][7]
    img = Image.fromarray(255 - q).resize((280, 280))
    if mode == "RGBA":
        ink = 255 - np.asarray(img)
        img = Image.fromarray(np.dstack([np.zeros((280, 280, 3), np.uint8), ink]), "RGBA")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def recipe_stages(recipe: dict[str, Any], batch: Any, repeat: int) -> dict[str, float]:
    """Each recipe step's median time on the batch the step before it produced."""
    from imgclass.data.preprocess.recipes import OPS, _as_batch, to_gray

    out = {}
    batch = _as_batch(batch)
    for i, step in enumerate(recipe["steps"]):
        params = {k: v for k, v in step.items() if k != "op"}
        op = OPS[step["op"]]
        out[f"recipe {i} {step['op']}"] = median_us(
            lambda op=op, b=batch, p=params: op(b, **p), repeat
        )
        batch = op(batch, **params)
    out["recipe to_gray/stack"] = median_us(lambda: to_gray(batch), repeat)
    return out


def stages_strokes(bundle: Any, body: bytes, repeat: int) -> dict[str, float]:
    from imgclass.data.preprocess import apply_recipe
    from imgclass.data.render import is_simplified, render_strokes, simplify_raw
    from imgclass.serve.inputs import parse_json_body, parse_strokes

    payload = parse_json_body(body)
    drawing = parse_strokes(payload["strokes"], 10_000, 1_000_000)
    simple = simplify_raw(drawing)
    raster = render_strokes(simple, size=28)[None]
    recipe = bundle.checked_recipe
    x = apply_recipe(recipe, raster, checked=True)
    feed = bundle.to_input(x)
    out = {
        "parse JSON": median_us(lambda: parse_json_body(body), repeat),
        "check strokes": median_us(
            lambda: parse_strokes(payload["strokes"], 10_000, 1_000_000), repeat
        ),
        "is_simplified": median_us(lambda: is_simplified(drawing), repeat),
        "simplify_raw": median_us(lambda: simplify_raw(drawing), repeat),
        "render_strokes": median_us(lambda: render_strokes(simple, size=28), repeat),
        "apply_recipe": median_us(lambda: apply_recipe(recipe, raster, checked=True), repeat),
    }
    out.update(recipe_stages(recipe, raster, repeat))
    out.update(model_stages(bundle, x, feed, repeat))
    return out


def stages_png(bundle: Any, png: bytes, repeat: int) -> dict[str, float]:
    from bench_serve import multipart as multipart_body
    from imgclass.data.decode import decode_pixels
    from imgclass.data.preprocess import apply_recipe, prepare_raw_image
    from imgclass.serve.multipart import form_field

    body, ctype = multipart_body(png)
    image = decode_pixels(png, 10**8, bundle.decode_side)
    recipe = bundle.checked_recipe
    gray = prepare_raw_image(image, recipe)
    x = apply_recipe(recipe, [gray], checked=True)
    feed = bundle.to_input(x)
    out = {
        "multipart": median_us(lambda: form_field(body, ctype, "file"), repeat),
        "decode_pixels": median_us(lambda: decode_pixels(png, 10**8, bundle.decode_side), repeat),
        "prepare_raw_image": median_us(lambda: prepare_raw_image(image, recipe), repeat),
        "apply_recipe": median_us(lambda: apply_recipe(recipe, [gray], checked=True), repeat),
    }
    out.update(recipe_stages(recipe, [gray], repeat))
    out.update(model_stages(bundle, x, feed, repeat))
    return out


def model_stages(bundle: Any, x: np.ndarray, feed: np.ndarray, repeat: int) -> dict[str, float]:
    from imgclass.serve.routes.predict import json_response

    proba = bundle.predict_proba(x)[0]
    answer = {
        "model": "m",
        "version": "v",
        "predictions": [{"label": bundle.labels[i], "probability": 0.1} for i in range(3)],
        "timing_ms": {"preprocess": 0.1, "model": 0.1, "total": 0.2},
        "input": None,
    }
    return {
        "to_input": median_us(lambda: bundle.to_input(x), repeat),
        "ORT session.run": median_us(
            lambda: bundle.session.run(["probabilities"], {"input": feed}), repeat
        ),
        "top-k": median_us(lambda: np.argsort(-proba)[:3], repeat),
        "JSON answer": median_us(lambda: json_response(answer), repeat),
    }


def whole(state: Any, kind: str, body: bytes, ctype: str, repeat: int) -> tuple[float, Any]:
    """The route's work function as the work pool runs it (parsing to JSON answer)."""
    from imgclass.serve.routes.predict import parse_payload, run_prediction

    predictor = state.predictor(None)

    def work() -> Any:
        k, payload = parse_payload(kind, body, ctype)
        return run_prediction(state, None, k, payload, 3, predictor)

    return median_us(work, repeat), work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--repeat", type=int, default=1000)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()

    from imgclass.serve.settings import ServeSettings
    from imgclass.serve.state import State

    with tempfile.TemporaryDirectory() as tmp:
        state = State(ServeSettings(models=[args.bundle], feedback_db=f"{tmp}/fb.sqlite3"))
        run(state, args)


def run(state: Any, args: argparse.Namespace) -> None:
    """Time the stages, then the whole work function, print the tables."""
    from bench_serve import multipart as multipart_body

    bundle = state.predictor(None).bundle
    strokes, png, rgba = strokes_body(), canvas_png(), canvas_png("RGBA")
    png_body, png_type = multipart_body(png)
    rgba_body, rgba_type = multipart_body(rgba)
    table = {
        "strokes": stages_strokes(bundle, strokes, args.repeat),
        "canvas png": stages_png(bundle, png, args.repeat),
        "canvas png rgba": stages_png(bundle, rgba, args.repeat),
    }
    works = {}
    for name, (kind, body, ctype) in {
        "strokes": ("json", strokes, "application/json"),
        "canvas png": ("multipart", png_body, png_type),
        "canvas png rgba": ("multipart", rgba_body, rgba_type),
    }.items():
        table[name]["= whole work function"], works[name] = whole(
            state, kind, body, ctype, args.repeat
        )
    for name, rows in table.items():
        print(f"\n{name} ({args.bundle})")
        print(f"{'stage':32s} {'µs':>9s}")
        for stage, us in rows.items():
            print(f"{stage:32s} {us:9.1f}")
    if args.cprofile:
        for name, work in works.items():
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(args.repeat):
                work()
            prof.disable()
            print(f"\ncProfile, {name}, {args.repeat} requests")
            pstats.Stats(prof).sort_stats("tottime").print_stats(18)
    print(json.dumps({"bench": "profile_predict", "us": table}))


if __name__ == "__main__":
    main()
