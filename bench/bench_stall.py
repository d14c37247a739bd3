"""Does CPU work stall the server? /healthz latency while heavy requests are processed.

Against one real ``imgclass serve`` (one process, loopback), in one run:

1. baseline: /healthz alone, one request at a time (p50, p99, max);
2. /healthz polled while six 4999x5000 RGBA PNGs (~100 KB each) are predicted in
   parallel; the server runs with IMGCLASS_MAX_IMAGE_PIXELS=25000000 so that they are
   processed (the default limit, 4096x4096, refuses them at once with 413);
3. /healthz polled while one batch of 32 drawings of 500 strokes is predicted;
4. c=32 connections posting a 280x280 canvas PNG for --seconds: req/s, p50, p99, max
   and errors (goal: p99 under 5x p50 and no errors).

Goal: /healthz p99 under 50 ms in 2 and 3. Prints a table and one JSON line.
Run: python bench/bench_stall.py [--bundle RUNDIR/bundle] [--seconds 15]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bench_serve import EXE, canvas_png, free_port, make_bundle, multipart, start


def connect(port: int, timeout: float = 120) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def post(conn: http.client.HTTPConnection, path: str, body: bytes, ctype: str) -> int:
    conn.request("POST", path, body, {"Content-Type": ctype})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def big_png(seed: int) -> bytes:
    """A 4999x5000 RGBA canvas, transparent but for a few thick black strokes."""
    img = Image.new("RGBA", (4999, 5000), (0, 0, 0, 0))
    points = np.random.default_rng(seed).integers(300, 4700, size=(12, 2))
    ImageDraw.Draw(img).line([tuple(int(v) for v in p) for p in points], (0, 0, 0, 255), 60)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def big_batch() -> bytes:
    """32 drawings of 500 three-point strokes each, in canvas pixels."""
    rng = np.random.default_rng(0)
    items = [
        {"strokes": [rng.integers(0, 1000, size=(2, 3)).tolist() for _ in range(500)]}
        for _ in range(32)
    ]
    return json.dumps({"items": items}).encode()


def stats(ms: list[float]) -> dict[str, float]:
    a = np.array(ms)
    return {
        "n": len(a),
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
    }


def health_times(port: int, until: threading.Event, min_seconds: float = 0.0) -> list[float]:
    """/healthz latencies, one request every ~10 ms, until ``until`` is set."""
    conn, out = connect(port), []
    started = time.perf_counter()
    while not until.is_set() or time.perf_counter() - started < min_seconds:
        t = time.perf_counter()
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        out.append((time.perf_counter() - t) * 1e3)
        time.sleep(0.01)
    conn.close()
    return out


def under_load(port: int, requests: list[tuple[str, bytes, str]]) -> dict[str, object]:
    """/healthz latencies while ``requests`` run in parallel, and how those went."""
    done, results = threading.Event(), []

    def one(path: str, body: bytes, ctype: str) -> None:
        t = time.perf_counter()
        status = post(connect(port), path, body, ctype)
        results.append((status, time.perf_counter() - t))

    threads = [threading.Thread(target=one, args=r) for r in requests]
    for t in threads:
        t.start()
    waiter = threading.Thread(target=lambda: ([t.join() for t in threads], done.set()))
    waiter.start()
    health = health_times(port, done)
    waiter.join()
    return {
        "healthz": stats(health),
        "statuses": sorted({s for s, _ in results}),
        "work_s": max(d for _, d in results),
    }


def canvas_load(port: int, seconds: float, concurrency: int) -> dict[str, float]:
    body, ctype = multipart(canvas_png())
    stop = time.perf_counter() + seconds
    lat: list[float] = []
    errors = [0]

    def worker() -> None:
        conn = connect(port, 30)
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                ok = post(conn, "/v1/predict", body, ctype) == 200
            except OSError:
                ok, conn = False, connect(port, 30)
            lat.append((time.perf_counter() - t) * 1e3)
            errors[0] += not ok

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {**stats(lat), "rps": len(lat) / (time.perf_counter() - t0), "errors": errors[0]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", help="a bundle (default: train cnn-small on the doodles)")
    parser.add_argument("--seconds", type=float, default=15, help="length of the c=32 load")
    args = parser.parse_args()
    images = [big_png(seed) for seed in range(6)]
    batch = big_batch()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(args.bundle) if args.bundle else make_bundle(Path(tmp))
        port = free_port()
        env = {**os.environ, "IMGCLASS_MAX_IMAGE_PIXELS": "25000000"}
        cmd = [EXE, "serve", "--model", str(bundle), "--port", str(port)]
        proc = start([*cmd, "--feedback-db", f"{tmp}/fb.sqlite3"], port, env)
        try:
            idle = threading.Event()
            idle.set()
            rows = {"baseline": {"healthz": stats(health_times(port, idle, 2.0))}}
            rows["six 25 MP PNGs"] = under_load(
                port, [("/v1/predict", *multipart(png)) for png in images]
            )
            rows["batch 32x500 strokes"] = under_load(
                port, [("/v1/predict/batch", batch, "application/json")]
            )
            load = canvas_load(port, args.seconds, 32)
        finally:
            proc.terminate()
            proc.wait()
    print(
        f"{'/healthz while':<22} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'work s':>7}"
    )
    for name, row in rows.items():
        h = row["healthz"]
        work = f"{row['work_s']:.2f}" if "work_s" in row else "-"
        print(
            f"{name:<22} {h['n']:>5} {h['p50_ms']:>8.2f} {h['p99_ms']:>8.2f} {h['max_ms']:>8.2f} "
            f"{work:>7}  {row.get('statuses', '')}"
        )
    print(
        f"canvas c=32 {args.seconds:g} s: {load['rps']:.0f} req/s, p50 {load['p50_ms']:.1f} ms, "
        f"p99 {load['p99_ms']:.1f} ms ({load['p99_ms'] / load['p50_ms']:.1f}x p50; goal < 5x), "
        f"max {load['max_ms']:.1f} ms, errors {load['errors']}"
    )
    print(json.dumps({"bench": "stall", "healthz": rows, "canvas_c32": load}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
