"""Slow-header connections (slowloris) against uvicorn's own h11 protocol and ours.

N clients each open a connection, send part of a request's headers, then one more byte
every second, never finishing. After --hold seconds we count how many of them the server
still holds open, and time ordinary GET requests made meanwhile. Both servers are real
uvicorn processes on 127.0.0.1 serving the same tiny ASGI app (the protocol is what is
measured, not the app): the baseline with ``http="h11"``, ours with
``imgclass.serve.protocol.with_header_timeout(--timeout)``. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVER = """
import sys, uvicorn
from imgclass.serve.protocol import with_header_timeout

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})

port, timeout = int(sys.argv[1]), float(sys.argv[2])
http = "h11" if timeout <= 0 else with_header_timeout(timeout)
uvicorn.run(app, host="127.0.0.1", port=port, http=http, log_level="critical", backlog=4096)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_ms(port: int) -> float:
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/")
    conn.getresponse().read()
    conn.close()
    return 1000 * (time.perf_counter() - start)


def still_open(s: socket.socket) -> bool:
    """True while the server has not closed the connection (any answer it sent is read)."""
    while True:
        try:
            if s.recv(65536, socket.MSG_DONTWAIT) == b"":
                return False
        except BlockingIOError:
            return True  # nothing more to read, and not closed
        except OSError:
            return False  # reset


def attack(port: int, clients: int, hold: float) -> dict[str, float]:
    socks = []
    for _ in range(clients):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        socks.append(s)
    latencies = []
    end = time.monotonic() + hold
    while time.monotonic() < end:
        for s in socks:
            with contextlib.suppress(OSError):
                s.send(b"a", socket.MSG_DONTWAIT)
        latencies.append(get_ms(port))
        time.sleep(1.0)
    held = sum(still_open(s) for s in socks)
    for s in socks:
        s.close()
    latencies.sort()
    return {"held_open": held, "get_p50_ms": latencies[len(latencies) // 2]}


def measure(timeout: float, clients: int, hold: float) -> dict[str, float]:
    port = free_port()
    env_path = str(REPO / "src")
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), str(timeout)],
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )
    try:
        for _ in range(200):
            try:
                get_ms(port)
                break
            except OSError:
                time.sleep(0.05)
        return attack(port, clients, hold)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1500)
    parser.add_argument("--hold", type=float, default=15.0, help="seconds of attack")
    parser.add_argument("--timeout", type=float, default=10.0, help="our header deadline")
    args = parser.parse_args()
    rows = {
        "uvicorn h11 (baseline)": measure(0, args.clients, args.hold),
        f"imgclass, header deadline {args.timeout:g} s": measure(
            args.timeout, args.clients, args.hold
        ),
    }
    print(f"{args.clients} slow-header clients, {args.hold:g} s")
    print(f"{'server':36} {'held open':>10} {'GET p50 ms':>11}")
    for name, row in rows.items():
        print(f"{name:36} {row['held_open']:>10} {row['get_p50_ms']:>11.1f}")
    print(json.dumps({"clients": args.clients, "hold_s": args.hold, "results": rows}))


if __name__ == "__main__":
    main()
