"""Serving speed, side by side with a naive server, loopback only (issue 10's goals).

1. Model-only latency of the bundle through ONNX Runtime, one image, one thread.
2. POST /v1/predict with a 280x280 PNG canvas (multipart): req/s and p50/p99 latency at
   concurrency 1 and 16, and server CPU per request (from /proc, so the load generator
   sharing the cores does not count), for our server and the naive one, one after the
   other, each one process, the same cnn-small bundle's architecture.
   Goal: our req/s >= 2x the naive torch server's at concurrency 16.
3. Server-side time (our responses' ``timing_ms.total``: decoding or parsing,
   preprocessing and the model) at concurrency 1, for the canvas PNG and for raw strokes
   (a real Quick, Draw! drawing with timings, as the page sends it), on ``--side-bundle``
   (the default int8 doodle bundle; default: --bundle). Goal: p50 <= 0.5 ms for both.

The naive servers: bench/naive_server.py (FastAPI + PIL + torch called eagerly in an
``async def`` route, what a user writes in ten lines) and bench/naive_keras_server.py (the
student projects' own Keras ``model.predict``; needs TensorFlow, see --naive-python).
Fairness: both run as one process with uvicorn's defaults in this environment (so the
naive one gets httptools too, when it is installed); the naive torch server uses
OMP_NUM_THREADS=--naive-threads (1 is its best on a busy machine: spinning threads cost
it more than the network does). The naive server computes on its event loop, so it uses
one core at most; ours runs its CPU work on a pool of threads that release the GIL in
OpenCV and ONNX Runtime, so on a machine with idle cores it may use more than one: the
CPU-per-request column compares the work done, whatever the cores.
Request counts are bounded. Prints a table and one JSON line.
Run: python bench/bench_serve.py --bundle CNN_SMALL/bundle --side-bundle RUN/bundle-int8
     --naive torch --naive-threads 1 [--requests 600 --naive-requests 600]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("imgclass"))
NAIVE_SCRIPTS = {"keras": "naive_keras_server.py", "torch": "naive_server.py"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_bundle(tmp: Path) -> Path:
    data, run = tmp / "doodles", tmp / "run"
    subprocess.run(
        [EXE, "-q", "data", "prepare", "--builtin", "doodles", "--out", str(data)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [
            EXE,
            "-q",
            "train",
            "--data",
            str(data),
            "--model",
            "cnn-small",
            "--out",
            str(run),
            "--epochs",
            "2",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return run / "bundle"


def model_latency(bundle: Path, n: int) -> dict[str, float]:
    from imgclass.bundle import load_bundle

    b = load_bundle(bundle, threads=1)
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    for _ in range(200):
        b.session.run(["probabilities"], {"input": x})
    times = []
    for _ in range(n):
        t = time.perf_counter()
        b.session.run(["probabilities"], {"input": x})
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def canvas_png() -> bytes:
    q = np.load(REPO / "src" / "imgclass" / "builtin" / "doodles.npz")["x"][7]
    img = Image.fromarray(255 - q).resize((280, 280))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def strokes_json() -> bytes:
    """A raw drawing (canvas coordinates and times) from the built-in doodles, as JSON."""
    import gzip

    path = REPO / "src" / "imgclass" / "builtin" / "doodles_strokes.ndjson.gz"
    with gzip.open(path, "rt") as f:
        drawing = json.loads(f.readline())["drawing"]
    return json.dumps({"strokes": drawing}).encode()


def multipart(png: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def load(
    port: int, path: str, body: bytes, ctype: str, n: int, concurrency: int
) -> dict[str, float]:
    def worker(count: int) -> tuple[list[float], list[float], list[float]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.connect()
        conn.sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )  # no Nagle/delayed-ACK stalls
        lat, server, model = [], [], []
        for _ in range(count):
            t = time.perf_counter()
            conn.request("POST", path, body, {"Content-Type": ctype})
            resp = conn.getresponse()
            data = resp.read()
            lat.append(time.perf_counter() - t)
            if resp.status != 200:
                raise RuntimeError(f"{resp.status} {data[:200]!r}")
            timing = json.loads(data).get("timing_ms", {})
            if "total" in timing:
                server.append(timing["total"])
                model.append(timing.get("model", float("nan")))
        conn.close()
        return lat, server, model

    per = [n // concurrency] * concurrency
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(worker, per))
    wall = time.perf_counter() - start
    lat = np.array([x for r in results for x in r[0]]) * 1e3
    server = [x for r in results for x in r[1]]
    model = [x for r in results for x in r[2]]
    return {
        "rps": len(lat) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "server_p50_ms": float(np.percentile(server, 50)) if server else float("nan"),
        "server_model_p50_ms": float(np.percentile(model, 50)) if model else float("nan"),
    }


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and its descendants, from /proc:
    what a request costs the server, whatever else the machine's cores are doing."""
    try:
        stats = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    except OSError:
        return float("nan")
    family, ticks = {pid}, 0
    for _ in range(4):  # uvicorn's workers are children; their helpers grandchildren
        family |= {p for p, (parent, _) in stats.items() if parent in family}
    ticks = sum(stats[p][1] for p in family if p in stats)
    return ticks / os.sysconf("SC_CLK_TCK")


def start(cmd: list[str], port: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server on {port} did not start: {cmd}")


def measure_server(
    cmd: list[str],
    port: int,
    path: str,
    body: bytes,
    ctype: str,
    n: int,
    env: dict[str, str] | None = None,
) -> dict[str, dict[str, float]]:
    """Start one server, warm it up, load it at concurrency 1 and 16, stop it."""
    proc = start(cmd, port, env)
    try:
        load(port, path, body, ctype, min(50, n), 1)  # warm up
        out = {}
        for c in (1, 16):
            cpu = cpu_seconds(proc.pid)
            out[f"c{c}"] = load(port, path, body, ctype, n, c)
            out[f"c{c}"]["server_cpu_ms"] = (cpu_seconds(proc.pid) - cpu) / n * 1e3
        return out
    finally:
        proc.terminate()
        proc.wait()


def serve_command(bundle: Path, port: int, workers: int, tmp: str) -> list[str]:
    return [
        EXE,
        "serve",
        "--model",
        str(bundle),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--feedback-db",
        f"{tmp}/fb.sqlite3",
    ]


def server_side(bundle: Path, n: int, tmp: str) -> dict[str, dict[str, float]]:
    """Server-side p50 (timing_ms.total) at concurrency 1 for a canvas PNG and raw strokes."""
    port = free_port()
    proc = start(serve_command(bundle, port, 1, tmp), port)
    png_body, png_type = multipart(canvas_png())
    inputs = {
        "canvas png": (png_body, png_type),
        "raw strokes": (strokes_json(), "application/json"),
    }
    try:
        out = {}
        for name, (body, ctype) in inputs.items():
            load(port, "/v1/predict", body, ctype, min(50, n), 1)  # warm up
            out[name] = load(port, "/v1/predict", body, ctype, n, 1)
        return out
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bundle", help="a cnn-small bundle (default: train one on the built-in doodles)"
    )
    parser.add_argument(
        "--requests", type=int, default=400, help="requests per load level for our server"
    )
    parser.add_argument("--naive-requests", type=int, default=64)
    parser.add_argument(
        "--naive",
        choices=["keras", "torch", "both"],
        default="both",
        help="which naive baseline to run (keras is the student projects' own)",
    )
    parser.add_argument(
        "--naive-python",
        default=sys.executable,
        help="a Python with tensorflow-cpu, fastapi, uvicorn, python-multipart and pillow",
    )
    parser.add_argument("--workers", type=int, default=1, help="our server's worker processes")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="ours and the naive servers take turns this many times; each keeps its best",
    )
    parser.add_argument(
        "--side-bundle",
        help="the bundle whose server-side time is measured (default: --bundle); the goal "
        "is stated for the default int8 doodle bundle (make run's work/runs/default/bundle-int8)",
    )
    parser.add_argument(
        "--naive-threads",
        type=int,
        help="OMP_NUM_THREADS for the naive torch server (default: torch's own choice; on a "
        "busy machine its spinning threads cost it more than the network does)",
    )
    args = parser.parse_args()
    body, ctype = multipart(canvas_png())
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(args.bundle) if args.bundle else make_bundle(Path(tmp))
        # One server at a time, so that neither steals the other's cores; the client runs
        # here. With --rounds, ours and the naive ones take turns, and each keeps its best
        # round (a busy machine slows whichever runs at the wrong moment).
        rounds: dict[str, list[dict[str, dict[str, float]]]] = {}
        for _ in range(args.rounds):
            port = free_port()
            rounds.setdefault("ours", []).append(
                measure_server(
                    serve_command(bundle, port, args.workers, tmp),
                    port,
                    "/v1/predict",
                    body,
                    ctype,
                    args.requests,
                )
            )
            for kind in ("keras", "torch") if args.naive == "both" else (args.naive,):
                port = free_port()
                python = args.naive_python if kind == "keras" else sys.executable
                script = REPO / "bench" / NAIVE_SCRIPTS[kind]
                env = None
                if args.naive_threads:
                    env = {**os.environ, "OMP_NUM_THREADS": str(args.naive_threads)}
                rounds.setdefault(kind, []).append(
                    measure_server(
                        [python, str(script), str(port)],
                        port,
                        "/predict",
                        body,
                        ctype,
                        args.naive_requests,
                        env,
                    )
                )
        best = {k: max(v, key=lambda r: r["c16"]["rps"]) for k, v in rounds.items()}
        ours = best.pop("ours")
        naive = best
        model = model_latency(bundle, 3000)
        side_bundle = Path(args.side_bundle) if args.side_bundle else bundle
        side = server_side(side_bundle, args.requests, tmp)
    print(
        f"model only (ONNX Runtime, 1 thread): p50 {model['p50_ms']:.3f} ms, p99 {model['p99_ms']:.3f} ms"
    )
    print(
        f"{'server':<12} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'server-side p50 ms':>19} {'server CPU ms/req':>18}"
    )
    for name, rows in (("ours", ours), *((f"{k} naive", v) for k, v in naive.items())):
        for level, r in rows.items():
            print(
                f"{name:<12} {level[1:]:>4} {r['rps']:>8.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                f"{r['server_p50_ms']:>19.2f} {r['server_cpu_ms']:>18.2f}"
            )
    if args.rounds > 1:
        turns = ", ".join(f"{k} {[round(r['c16']['rps']) for r in v]}" for k, v in rounds.items())
        print(f"req/s at concurrency 16 by round (best kept): {turns}")
    ratios = {k: ours["c16"]["rps"] / v["c16"]["rps"] for k, v in naive.items()}
    cpu_ratios = {
        k: v["c16"]["server_cpu_ms"] / ours["c16"]["server_cpu_ms"] for k, v in naive.items()
    }
    for kind, ratio in ratios.items():
        print(
            f"req/s ours / {kind} naive at concurrency 16: {ratio:.1f}x (goal >= 2); server CPU per request "
            f"{kind} naive / ours: {cpu_ratios[kind]:.1f}x (the load generator shares the cores; "
            "CPU per request does not depend on it)"
        )
    print(f"server-side time at concurrency 1 on {side_bundle} (goal p50 <= 0.5 ms):")
    for name, r in side.items():
        print(
            f"  {name:<12} p50 {r['server_p50_ms']:.2f} ms, of which the model "
            f"{r['server_model_p50_ms']:.2f} ms (round trip p50 {r['p50_ms']:.2f} ms)"
        )
    print(
        json.dumps(
            {
                "bench": "serve",
                "workers": args.workers,
                "naive_threads": args.naive_threads,
                "model_only": model,
                "ours": ours,
                "naive": naive,
                "rounds_c16_rps": {k: [r["c16"]["rps"] for r in v] for k, v in rounds.items()},
                "rps_ratio_c16": ratios,
                "server_side": {"bundle": str(side_bundle), **side},
                "server_cpu_ratio_c16": cpu_ratios,
            }
        )
    )


if __name__ == "__main__":
    main()
