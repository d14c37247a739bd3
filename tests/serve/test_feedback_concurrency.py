"""2,000 feedback posts sent at once over loopback to a real server with two worker
processes sharing one SQLite file: every distinct submission is stored exactly once, and
every repeat is answered as a duplicate of it."""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict

import pytest

from imgclass.feedback.store import FeedbackStore

POSTS = 2000
UNIQUE = 1600  # the other 400 repeat one of these, byte for byte
THREADS = 48


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(digits_bundle, tmp_path):
    """``imgclass serve --workers 2`` in a subprocess; yields (port, database path)."""
    port, db = free_port(), tmp_path / "fb.sqlite3"
    env = {**os.environ, "IMGCLASS_ADMIN_TOKEN": ""}
    args = ["serve", "--model", str(digits_bundle), "--port", str(port), "--workers", "2",
            "--feedback-db", str(db)]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "imgclass", *args], env=env)
    try:
        started = time.perf_counter()
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except OSError:
                assert proc.poll() is None, "the server exited"
                assert time.perf_counter() - started < 60, "the server did not start"
                time.sleep(0.1)
        yield port, db
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def bodies() -> list[tuple[int, bytes]]:
    """(key, JSON body) for every post, in a shuffled order: the repeats may arrive
    before, with or after their originals."""
    unique = [
        json.dumps(
            {
                "input": {"strokes": [[[k % 250, 255], [k // 250, 128], [0, 10]]]},
                "label": str(k % 10),
                "client_id": f"c{k % 37}",
            }
        ).encode()
        for k in range(UNIQUE)
    ]
    rng = random.Random(0)
    posts = [(k, unique[k]) for k in range(UNIQUE)]
    posts += [(k, unique[k]) for k in rng.sample(range(UNIQUE), POSTS - UNIQUE)]
    rng.shuffle(posts)
    return posts


def send_all(port: int, posts: list[tuple[int, bytes]]) -> list[tuple[int, int, dict]]:
    """Post everything from THREADS threads, each over one keep-alive connection."""
    results: list[tuple[int, int, dict]] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def worker(part: list[tuple[int, bytes]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        start.wait()
        mine = []
        for key, body in part:
            conn.request("POST", "/v1/feedback", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            mine.append((key, response.status, json.loads(response.read())))
        conn.close()
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=worker, args=(posts[i::THREADS],)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_posts_are_stored_exactly_once(server):
    port, db = server
    posts = bodies()
    started = time.perf_counter()
    results = send_all(port, posts)
    seconds = time.perf_counter() - started
    assert len(results) == POSTS
    failed = [(status, answer) for _, status, answer in results if status != 200]
    assert not failed, failed[:5]
    answers: dict[int, list[dict]] = defaultdict(list)
    for key, _, answer in results:
        answers[key].append(answer)
    assert len(answers) == UNIQUE
    for group in answers.values():
        assert len({a["id"] for a in group}) == 1  # every repeat names the original's id
        assert sum(not a["duplicate"] for a in group) == 1  # exactly one was new
    assert len({group[0]["id"] for group in answers.values()}) == UNIQUE
    with FeedbackStore.from_path_or_url(db) as store:
        assert store.count() == UNIQUE
        assert {i.id for i in store.iter_inputs(status="new")} == {
            group[0]["id"] for group in answers.values()
        }
    print(f"\n{POSTS} posts from {THREADS} threads, 2 workers: {seconds:.1f} s")
