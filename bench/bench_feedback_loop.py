"""Does the feedback loop work? Simulated users on real MNIST, a real server, a real retrain.

1. A champion (cnn-small) is trained on a deliberately narrow slice of MNIST: plenty of
   the digits 0-4, only a handful of each of 5-9. It is registered as digits@champion
   in a fresh MLflow store and served by ``imgclass serve --registry digits``.
2. "Users" draw held-out MNIST test digits: each goes to ``/v1/predict/batch``; every
   wrong guess is corrected through ``POST /v1/feedback``. An admin accepts the
   corrections through the admin API.
3. ``imgclass retrain --registry digits`` fine-tunes a challenger and promotes it if the
   rule allows; the server picks the new champion up by itself.
4. Accuracy before and after on the original test split (the champion's frozen one) and
   on *new* users' digits that were never used as feedback, measured through the server.
5. A poisoned batch: a fresh set of corrections with random wrong labels, accepted, then
   ``imgclass retrain`` again: it must be refused promotion.

Prints a table and one JSON line. About 3-5 minutes on 2 cores.

    .venv/bin/python bench/bench_feedback_loop.py [--users 1500] [--new-users 3000]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist.npz"
TOKEN = "bench-admin"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
BATCH = 32


def imgclass(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run the CLI; its stdout (the bench stops on failure, showing stderr)."""
    command = [sys.executable, "-m", "imgclass", *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"failed: imgclass {' '.join(args)}")
    return done.stdout


def narrow_slice(work: Path, rich: int, rare: int) -> Path:
    """An npz of MNIST training digits: ``rich`` of each of 0-4, ``rare`` of each of 5-9;
    its test split is the first 2,000 MNIST test digits (all ten classes)."""
    m = np.load(MNIST)
    x, y = m["x_train"], m["y_train"]
    keep = np.concatenate([np.flatnonzero(y == d)[: rich if d < 5 else rare] for d in range(10)])
    keep.sort()
    path = work / "narrow.npz"
    np.savez(
        path, x_train=x[keep], y_train=y[keep], x_test=m["x_test"][:2000], y_test=m["y_test"][:2000]
    )
    return path


def png_b64(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(work: Path, uri: str, db: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "IMGCLASS_ADMIN_TOKEN": TOKEN}
    command = [sys.executable, "-m", "imgclass", "-q", "serve", "--registry", "digits"]
    command += ["--tracking-uri", uri, "--feedback-db", str(db), "--port", str(port)]
    command += ["--poll-seconds", "1"]
    log = open(work / "server.log", "wb")  # noqa: SIM115 (kept open for the server's life)
    return subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=log)


def wait_ready(client: httpx.Client, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not become ready")


def predict(client: httpx.Client, images: np.ndarray) -> tuple[list[list[dict[str, Any]]], str]:
    """Top-3 guesses for each image through /v1/predict/batch; and the serving version."""
    out: list[list[dict[str, Any]]] = []
    version = ""
    for i in range(0, len(images), BATCH):
        items = [{"image_base64": png_b64(x)} for x in images[i : i + BATCH]]
        answer = client.post("/v1/predict/batch", json={"items": items})
        answer.raise_for_status()
        body = answer.json()
        version = str(body.get("version"))
        out += [r["predictions"] for r in body["results"]]
    return out, version


def accuracy(guesses: list[list[dict[str, Any]]], labels: np.ndarray) -> float:
    top = np.array([g[0]["label"] for g in guesses])
    return float((top == labels.astype(str)).mean())


def send_feedback(
    client: httpx.Client, images: np.ndarray, labels: list[str], guesses: list[Any], who: str
) -> int:
    """POST each correction; returns how many were stored (not duplicates)."""
    stored = 0
    for i, (x, label) in enumerate(zip(images, labels, strict=True)):
        body = {
            "input": {"image_base64": png_b64(x)},
            "label": label,
            "predicted": guesses[i][:3],
            "client_id": f"{who}-{i}",
        }
        answer = client.post("/v1/feedback", json=body)
        answer.raise_for_status()
        stored += not answer.json()["duplicate"]
    return stored


def accept_all_new(client: httpx.Client) -> int:
    """The admin accepts every new submission (admin API, token)."""
    ids: list[int] = []
    while True:
        page = client.get(
            "/v1/feedback",
            params={"status": "new", "limit": 1000, "offset": len(ids)},
            headers=ADMIN,
        )
        page.raise_for_status()
        items = page.json()["items"]
        if not items:
            break
        ids += [item["id"] for item in items]
    if ids:
        answer = client.post(
            "/v1/feedback/review", json={"ids": ids, "status": "accepted"}, headers=ADMIN
        )
        answer.raise_for_status()
    return len(ids)


def retrain(work: Path, uri: str, db: Path, epochs: int, out: str) -> dict[str, Any]:
    args = ["retrain", "--registry", "digits", "--tracking-uri", uri, "--feedback-db", str(db)]
    args += ["--epochs", str(epochs), "--out", str(work / out), "--json"]
    started = time.perf_counter()
    result: dict[str, Any] = json.loads(imgclass("-q", *args, cwd=work).strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - started
    return result


def wait_for_version(
    client: httpx.Client, sample: np.ndarray, version: str, timeout: float = 60
) -> str:
    deadline = time.monotonic() + timeout
    served = ""
    while time.monotonic() < deadline:
        _, served = predict(client, sample[:1])
        if served == version:
            return served
        time.sleep(0.5)
    return served


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    timings: dict[str, float] = {}
    t = time.perf_counter()
    m = np.load(MNIST)
    x_test, y_test = m["x_test"], m["y_test"]
    users = slice(2000, 2000 + args.users)  # they send corrections
    poison = slice(5000, 5000 + args.poison)  # the poisoned batch
    new_users = slice(10000 - args.new_users, 10000)  # never feedback: the yardstick
    assert users.stop <= poison.start and poison.stop <= new_users.start, "overlapping pools"

    uri = f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"
    db = work / "feedback.sqlite3"
    imgclass(
        "-q",
        "data",
        "prepare",
        str(narrow_slice(work, args.rich, args.rare)),
        "--out",
        str(work / "narrow"),
        cwd=work,
    )
    imgclass(
        "-q",
        "train",
        "--data",
        str(work / "narrow"),
        "--model",
        "cnn-small",
        "--out",
        str(work / "champion"),
        "--epochs",
        str(args.champion_epochs),
        "--tracking-uri",
        uri,
        cwd=work,
    )
    from imgclass.experiments.model_registry import ModelRegistry

    registry = ModelRegistry(uri)
    registry.register(work / "champion" / "bundle", "digits", alias="champion")
    timings["champion"] = time.perf_counter() - t

    port = free_port()
    server = start_server(work, uri, db, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            wait_ready(client)
            return loop(
                args,
                work,
                client,
                registry,
                uri,
                db,
                timings,
                (x_test, y_test, users, poison, new_users),
            )
    finally:
        server.terminate()
        server.wait(timeout=30)


def loop(
    args: argparse.Namespace,
    work: Path,
    client: httpx.Client,
    registry: Any,
    uri: str,
    db: Path,
    timings: dict[str, float],
    pools: tuple[Any, ...],
) -> dict[str, Any]:
    x_test, y_test, users, poison, new_users = pools
    t = time.perf_counter()
    new_before, v1 = predict(client, x_test[new_users])
    guesses, _ = predict(client, x_test[users])
    truth = y_test[users].astype(str)
    wrong = np.flatnonzero(np.array([g[0]["label"] for g in guesses]) != truth)
    sent = send_feedback(
        client, x_test[users][wrong], list(truth[wrong]), [guesses[i] for i in wrong], "user"
    )
    accepted = accept_all_new(client)
    timings["users"] = time.perf_counter() - t

    t = time.perf_counter()
    good = retrain(work, uri, db, args.epochs, "retrain-1")
    timings["retrain"] = time.perf_counter() - t
    served = (
        wait_for_version(client, x_test[:1], str(good["challenger_version"]))
        if good["promoted"]
        else v1
    )
    new_after, v2 = predict(client, x_test[new_users])

    t = time.perf_counter()
    rng = np.random.default_rng(0)
    p_truth = y_test[poison]
    p_labels = [str((int(d) + rng.integers(1, 10)) % 10) for d in p_truth]  # always wrong
    p_guesses, _ = predict(client, x_test[poison])
    poisoned = send_feedback(client, x_test[poison], p_labels, p_guesses, "troll")
    accept_all_new(client)
    bad = retrain(work, uri, db, args.epochs, "retrain-2")
    timings["poisoned_retrain"] = time.perf_counter() - t
    new_final, v3 = predict(client, x_test[new_users])
    ny = y_test[new_users]
    return {
        "users": args.users,
        "corrections_sent": int(len(wrong)),
        "corrections_stored": sent,
        "accepted": accepted,
        "original_test_before": good["comparison"]["champion"]["original_test"]["accuracy"],
        "original_test_after": good["comparison"]["challenger"]["original_test"]["accuracy"],
        "feedback_test_before": good["comparison"]["champion"]["feedback_test"]["accuracy"],
        "feedback_test_after": good["comparison"]["challenger"]["feedback_test"]["accuracy"],
        "feedback_test_n": good["comparison"]["challenger"]["feedback_test"]["n"],
        "new_users_n": int(len(ny)),
        "new_users_before": accuracy(new_before, ny),
        "new_users_after": accuracy(new_after, ny),
        "new_users_after_poison_retrain": accuracy(new_final, ny),
        "new_users_rare_before": rare_accuracy(new_before, ny),
        "new_users_rare_after": rare_accuracy(new_after, ny),
        "promoted": good["promoted"],
        "reasons": good["reasons"],
        "served_versions": [v1, v2, v3],
        "server_switched": served == v2 == str(good["challenger_version"]),
        "poisoned_sent": int(len(p_labels)),
        "poisoned_stored": poisoned,
        "poisoned_promoted": bad["promoted"],
        "poisoned_reasons": bad["reasons"],
        "poisoned_original_test": bad["comparison"]["challenger"]["original_test"]["accuracy"],
        "poisoned_original_test_champion": bad["comparison"]["champion"]["original_test"][
            "accuracy"
        ],
        "poisoned_feedback_test_before": bad["comparison"]["champion"]["feedback_test"]["accuracy"],
        "poisoned_feedback_test_after": bad["comparison"]["challenger"]["feedback_test"][
            "accuracy"
        ],
        "retrain_seconds": round(good["seconds"], 1),
        "fine_tune": good["fine_tune"],
        "champion_version_at_end": registry.get("digits", "champion").version,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }


def rare_accuracy(guesses: list[list[dict[str, Any]]], labels: np.ndarray) -> float:
    """Accuracy on the digits the champion barely saw (5-9)."""
    rare = labels >= 5
    return accuracy([g for g, r in zip(guesses, rare, strict=True) if r], labels[rare])


def table(r: dict[str, Any]) -> str:
    def pct(v: float) -> str:
        return f"{100 * v:6.2f}%"

    rows = [
        ("original test split (2,000)", r["original_test_before"], r["original_test_after"]),
        (f"new users ({r['new_users_n']:,})", r["new_users_before"], r["new_users_after"]),
        ("new users, digits 5-9", r["new_users_rare_before"], r["new_users_rare_after"]),
        (
            f"held-out feedback ({r['feedback_test_n']})",
            r["feedback_test_before"],
            r["feedback_test_after"],
        ),
    ]
    lines = [f"{'accuracy':<30} {'champion':>9} {'retrained':>10}"]
    lines += [f"{name:<30} {pct(a):>9} {pct(b):>10}" for name, a, b in rows]
    lines.append(
        f"corrections: {r['corrections_sent']} of {r['users']} users' digits; promoted: "
        f"{r['promoted']}; server now serves version {r['served_versions'][1]}"
    )
    lines.append(
        f"poisoned batch ({r['poisoned_sent']} random labels): promoted {r['poisoned_promoted']}"
        f" ({'; '.join(r['poisoned_reasons'])})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rich", type=int, default=500, help="training digits of each of 0-4")
    p.add_argument("--rare", type=int, default=10, help="training digits of each of 5-9")
    p.add_argument("--champion-epochs", type=int, default=4)
    p.add_argument("--users", type=int, default=1500, help="users' digits (wrong ones corrected)")
    p.add_argument("--poison", type=int, default=400, help="poisoned corrections")
    p.add_argument("--new-users", type=int, default=3000, help="digits to measure on")
    p.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs")
    p.add_argument("--workdir", help="keep everything here (default: a temporary folder)")
    args = p.parse_args(argv)
    if not MNIST.exists():
        print(f"needs {MNIST}", file=sys.stderr)
        return 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix="feedback-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args, work)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
