"""The page's guesses in headless Chromium: in the browser against on the server.

For the default doodle model (cnn-small on the built-in doodles, trained here by
bench_serve.py's make_bundle unless --bundle is given), real Quick, Draw! drawings are replayed as mouse moves on the page's
canvas, one move every --interval-ms (16: a 60 Hz pointer), side by side in one run:

- browser: the page as served (onnxruntime-web on the page's thread, moves taken from
  ``pointerrawupdate`` as they come, a guess started in the event handler);
- browser-frame: the same with ``?pointer-raw=0`` (moves from ``pointermove``, which
  Chromium holds until the next animation frame);
- browser-worker-frame: ``?ort-proxy=1&pointer-raw=0``, the model in onnxruntime-web's
  worker and frame-aligned moves: the baseline, as the page was before it ran the model on
  its own thread (only the guess scheduling and the drawing of new segments are today's);
- server: the model file blocked, so that the page falls back to ``/v1/predict``.

For each path: p50/p95 of the time from a pointer event (its ``timeStamp``, on the same
clock as ``performance.now()``) to the guess it produced being on the page (the DOM
updated; the page's own ``imgclass:guess`` events carry that time), and how many moves
got a guess.
Then the time from navigation start (and from the load event) to the first guess (drawing
starts as soon as the page has loaded) and to the in-browser model being ready, on a cold load (no cache) and
a warm one (a reload: the browser's HTTP and WebAssembly code caches).

Goals (issue 13): p50 <= 5 ms in the browser; first guess <= 1 s after load.

    python bench/bench_page.py [--bundle RUNDIR/bundle] [--drawings 6] [--quick]

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import make_bundle  # noqa: E402  (the same cnn-small bench_serve serves)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "quickdraw_strokes_raw.ndjson.gz"
CHROMIUM = "/usr/bin/chromium"
LISTEN = (
    "window.__guesses = []; window.__engineAt = null;"
    "document.addEventListener('imgclass:guess', (e) => __guesses.push({...e.detail, at: performance.now()}));"
    "document.addEventListener('imgclass:engine', (e) => { __engineAt = performance.now(); });"
    "window.__firstDown = null; document.addEventListener('pointerdown',"
    " (e) => { if (__firstDown === null) __firstDown = e.timeStamp; }, true);"
)


def drawings(labels: list[str], n: int) -> list[list[list[tuple[float, float]]]]:
    """n real drawings of the model's classes (the last ones in the file, the least likely
    to have been trained on), as strokes of canvas points (0..280)."""
    found = []
    with gzip.open(DATA, "rt") as f:
        for line in f:
            d = json.loads(line)
            if d["word"] in labels:
                found.append(d["drawing"])
    out = []
    for d in found[::-1][:n]:
        xs = np.concatenate([s[0] for s in d])
        ys = np.concatenate([s[1] for s in d])
        lo, extent = min(xs.min(), ys.min()), max(xs.max() - xs.min(), ys.max() - ys.min(), 1)
        scale = 240 / extent
        out.append(
            [
                [
                    (20 + (x - xs.min()) * scale, 20 + (y - ys.min()) * scale)
                    for x, y in zip(s[0], s[1], strict=True)
                ]
                for s in d
            ]
        )
        del lo
    return out


def replay(page, strokes, interval_ms: float) -> int:
    """Draw with real mouse events, one move per interval; returns the number of moves."""
    box = page.locator("#canvas").bounding_box()
    k = box["width"] / 280
    moves = 0
    for stroke in strokes:
        (x0, y0), *rest = stroke
        page.mouse.move(box["x"] + x0 * k, box["y"] + y0 * k)
        page.mouse.down()
        for x, y in rest:
            t = time.perf_counter()
            page.mouse.move(box["x"] + x * k, box["y"] + y * k)
            moves += 1
            left = interval_ms / 1000 - (time.perf_counter() - t)
            if left > 0:
                time.sleep(left)
        page.mouse.up()
    return moves


PATHS = {
    "browser": "/",
    "browser-frame": "/?pointer-raw=0",
    "browser-worker-frame": "/?ort-proxy=1&pointer-raw=0",
    "server": "/",
}


def run_path(browser, url: str, path: str, sketches, interval_ms: float) -> dict:
    """Latencies of one path over all drawings."""
    context = browser.new_context(viewport={"width": 900, "height": 800})
    page = context.new_page()
    if path == "server":
        page.route("**/model.onnx", lambda route: route.abort())
    page.add_init_script(LISTEN)
    page.goto(url + PATHS[path])
    where = page.evaluate("window.imgclassEngine.whenReady.then((e) => e.where)")
    assert where == path.split("-")[0], f"the page runs on {where}, not {path}"
    latencies, handled, compute, moves, answered = [], [], [], 0, 0
    for strokes in sketches:
        page.evaluate("window.__guesses = []")
        moves += replay(page, strokes, interval_ms)
        page.wait_for_timeout(300)
        got = page.evaluate("window.__guesses")
        assert all(g["where"] == path.split("-")[0] for g in got)
        latencies += [g["ms"] for g in got]
        handled += [g["fromHandler"] for g in got]
        compute += [
            g["timing"]["preprocess"] + g["timing"]["model"] for g in got if g.get("timing")
        ]
        answered += len(got)
        page.click("#clear")
    context.close()
    ms = np.array(latencies)
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "from_handler_p50_ms": float(np.percentile(handled, 50)),
        "from_handler_p95_ms": float(np.percentile(handled, 95)),
        "compute_p50_ms": float(np.percentile(compute, 50)) if compute else None,
        "guesses": answered,
        "moves": moves,
    }


def first_guess(browser, url: str, context=None) -> dict:
    """ms from navigation start to the first guess, drawing as soon as the page loads."""
    own = context is None
    context = context or browser.new_context(viewport={"width": 900, "height": 800})
    page = context.new_page()
    page.add_init_script(LISTEN)
    page.goto(url + "/", wait_until="load")
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + 60, box["y"] + 60)
    page.mouse.down()
    for i in range(1, 40):
        page.mouse.move(box["x"] + 60 + 4 * i, box["y"] + 60 + 3 * i)
        if page.evaluate("window.__guesses.length"):
            break
        time.sleep(0.01)
    page.mouse.up()
    page.wait_for_function("window.__guesses.length > 0", timeout=20000)
    page.evaluate("window.imgclassEngine.whenReady")
    result = page.evaluate(
        "({first: __guesses[0].at, where: __guesses[0].where, engine: __engineAt, down: __firstDown,"
        " load: performance.getEntriesByType('navigation')[0].loadEventEnd,"
        " steps: window.imgclassEngine.timing})"
    )
    page.close()
    if own:
        context.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a doodle bundle (default: train cnn-small)")
    parser.add_argument("--drawings", type=int, default=6, help="real drawings replayed per path")
    parser.add_argument(
        "--interval-ms", type=float, default=16.0, help="time between pointer moves"
    )
    parser.add_argument("--loads", type=int, default=3, help="page loads timed, cold and warm each")
    parser.add_argument("--quick", action="store_true", help="2 drawings, 1 load of each kind")
    args = parser.parse_args(argv)
    if args.quick:
        args.drawings, args.loads = 2, 1
    from playwright.sync_api import sync_playwright

    from imgclass.serve.app import create_app
    from imgclass.serve.settings import ServeSettings
    from imgclass.testing import LocalServer

    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or make_bundle(Path(tmp))
        labels = json.loads((bundle / "labels.json").read_text())
        app = create_app(ServeSettings(models=[str(bundle)], feedback_db=Path(tmp) / "fb.sqlite3"))
        server = LocalServer(app)
        url = server.url
        sketches = drawings(labels, args.drawings)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            paths = {
                name: run_path(browser, url, name, sketches, args.interval_ms) for name in PATHS
            }
            cold = [first_guess(browser, url) for _ in range(args.loads)]
            context = browser.new_context(viewport={"width": 900, "height": 800})
            first_guess(browser, url, context)  # fills the caches
            warm = [first_guess(browser, url, context) for _ in range(args.loads)]
            context.close()
            browser.close()
        server.stop()
    report(paths, cold, warm, args)
    return 0


def report(paths: dict, cold: list, warm: list, args) -> None:
    print(
        f"pointer move -> guess on the page ({args.drawings} real drawings, a move every"
        f" {args.interval_ms:g} ms; load average {os.getloadavg()[0]:.1f})"
    )
    print(
        f"{'path':<22}{'p50 ms':>8}{'p95 ms':>8}{'handler p50':>13}{'p95':>7}{'compute p50':>13}{'guesses':>9}{'moves':>7}"
    )
    for name, r in paths.items():
        work = "-" if r["compute_p50_ms"] is None else f"{r['compute_p50_ms']:.2f}"
        print(
            f"{name:<22}{r['p50_ms']:>8.2f}{r['p95_ms']:>8.2f}{r['from_handler_p50_ms']:>13.2f}"
            f"{r['from_handler_p95_ms']:>7.2f}{work:>13}{r['guesses']:>9}{r['moves']:>7}"
        )
    print(
        "p50/p95: from the pointer event's timeStamp to the guess in the DOM; handler: from the\n"
        "page's move handler; compute: input preparation + model run. browser: as served (page\n"
        "thread, pointerrawupdate); -frame: pointermove (frame-aligned); -worker: ORT in a worker."
    )
    print("\nfirst guess after navigation start (drawing from the load event on)")
    print(
        f"{'load':<6}{'first ms':>10}{'after load':>12}{'after down':>12}{'from':>9}"
        f"{'model ready ms':>16}{'load ms':>9}"
        "  model ready: steps (ms)"
    )
    for kind, runs in (("cold", cold), ("warm", warm)):
        for r in runs:
            steps = " ".join(f"{k} {v:.0f}" for k, v in (r.get("steps") or {}).items())
            print(
                f"{kind:<6}{r['first']:>10.0f}{r['first'] - r['load']:>12.0f}"
                f"{r['first'] - r['down']:>12.0f}{r['where']:>9}"
                f"{(r['engine'] or float('nan')):>16.0f}"
                f"{r['load']:>9.0f}  {steps}"
            )
    summary = {
        "bench": "page",
        "interval_ms": args.interval_ms,
        "drawings": args.drawings,
        "load_1min": os.getloadavg()[0],
        **{name.replace("-", "_"): r for name, r in paths.items()},
        "p50_ratio_baseline_over_browser": paths["browser-worker-frame"]["p50_ms"]
        / paths["browser"]["p50_ms"],
        "p50_ratio_server_over_browser": paths["server"]["p50_ms"] / paths["browser"]["p50_ms"],
        "first_guess_ms": {
            k: float(np.median([r["first"] for r in v]))
            for k, v in (("cold", cold), ("warm", warm))
        },
        "first_guess_after_load_event_ms": {
            k: float(np.median([r["first"] - r["load"] for r in v]))
            for k, v in (("cold", cold), ("warm", warm))
        },
        "first_guess_after_first_pointer_down_ms": {
            k: float(np.median([r["first"] - r["down"] for r in v]))
            for k, v in (("cold", cold), ("warm", warm))
        },
        "model_ready_ms": {
            k: float(np.median([r["engine"] or np.nan for r in v]))
            for k, v in (("cold", cold), ("warm", warm))
        },
        "first_guess_from": {
            k: [r["where"] for r in v] for k, v in (("cold", cold), ("warm", warm))
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
