"""Training within a time budget: requested vs actual wall time, and what it bought.

Runs ``imgclass train --time-limit T`` as a user would (a fresh process each time, so
imports, data loading, ONNX export and the bundle's evaluation all count) for each
budget in ``--budgets``, on the built-in doodles by default, and, side by side in the
same run, the same command without a budget (the baseline: the model's own epochs).
For each: the whole command's wall time, how far over or under the budget it ended,
the epochs planned and done (of the cap), the share of an epoch when not even one fit,
the measured training speed and the test accuracy.

Goal (issue 12): every budgeted run ends within 10% of its budget, with a valid bundle.

    python bench/bench_budget.py                          # 15s, 30s, 60s + baseline
    python bench/bench_budget.py --budgets 5m,10m --data work/mnist --no-baseline
    python bench/bench_budget.py --budgets 20s --model cnn-small --epochs 100

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from imgclass.train.budget import parse_duration


def imgclass(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgclass", "-q", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def prepare(data: Path, env: dict[str, str]) -> Path:
    """The built-in doodles (20 categories), prepared once."""
    if not (data / "manifest.json").is_file():
        done = imgclass("data", "prepare", "--builtin", "doodles", "--out", str(data), env=env)
        if done.returncode:
            sys.exit(f"preparing the doodles failed:\n{done.stderr}")
    return data


def one_run(
    label: str, data: Path, out: Path, extra: list[str], env: dict[str, str]
) -> dict[str, Any]:
    """One ``imgclass train`` command, timed from the outside."""
    started = time.monotonic()
    done = imgclass("train", "--data", str(data), "--out", str(out), "--json", *extra, env=env)
    wall = time.monotonic() - started
    if done.returncode:
        return {"run": label, "error": done.stderr.strip().splitlines()[-1:], "wall_s": wall}
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    budget = metrics.get("budget") or {}
    history = json.loads((out / "bundle" / "metrics.json").read_text()).get("history") or []
    return {
        "run": label,
        "wall_s": round(wall, 2),
        "train_s": round(metrics.get("train_seconds", 0.0), 2),
        "epochs_done": len(history),
        "epochs_planned": budget.get("epochs_planned"),
        "epochs_cap": budget.get("epochs_cap"),
        "fraction_of_epoch": budget.get("fraction_of_epoch"),
        "samples_per_s": round(budget.get("samples_per_second", 0.0))
        or round(sum(r.get("samples_per_second", 0) for r in history) / max(1, len(history))),
        "test_accuracy": (metrics.get("test") or {}).get("accuracy"),
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'run':>10} {'wall s':>8} {'vs limit':>9} {'epochs':>11} {'share':>6} {'samples/s':>10} {'test acc':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['run']:>10} failed: {r['error']}")
            continue
        limit = r.get("limit_s")
        over = f"{100 * (r['wall_s'] / limit - 1):+.0f}%" if limit else "-"
        epochs = f"{r['epochs_done']}/{r['epochs_planned'] or '-'}/{r['epochs_cap'] or '-'}"
        share = f"{r['fraction_of_epoch']:.2f}" if r["fraction_of_epoch"] is not None else "-"
        acc = f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "-"
        lines.append(
            f"{r['run']:>10} {r['wall_s']:>8.1f} {over:>9} {epochs:>11} {share:>6} "
            f"{r['samples_per_s']:>10} {acc:>9}"
        )
    lines.append("epochs: done/planned/cap; share: of one epoch (1 = whole epochs)")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--budgets", default="15s,30s,60s", help="comma-separated durations")
    p.add_argument("--data", type=Path, help="prepared dataset (default: the built-in doodles)")
    p.add_argument("--model", help="model family (default: imgclass train's)")
    p.add_argument("--epochs", type=int, help="epoch cap (default: the model's)")
    p.add_argument("--no-baseline", action="store_true", help="skip the run without a budget")
    p.add_argument("--track", action="store_true", help="record runs in MLflow (a temp store)")
    p.add_argument("--set", action="append", default=[], help="extra --set for every run")
    args = p.parse_args()
    budgets = [(text, parse_duration(text, "--budgets")) for text in args.budgets.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-budget-") as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        data = args.data or prepare(Path(tmp) / "doodles", env)
        common = [*(["--model", args.model] if args.model else []),
                  *(["--epochs", str(args.epochs)] if args.epochs else []),
                  *(a for s in args.set for a in ("--set", s)),
                  *([] if args.track else ["--no-track"])]  # fmt: skip
        rows = []
        for text, seconds in budgets:
            row = one_run(
                text, data, Path(tmp) / f"run-{text}", [*common, "--time-limit", text], env
            )
            rows.append({**row, "limit_s": seconds})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress
        if not args.no_baseline:
            rows.append(one_run("no limit", data, Path(tmp) / "run-base", common, env))
    print(table(rows))
    within = [r for r in rows if r.get("limit_s") and "error" not in r]
    summary = {
        "bench": "budget",
        "cpus": os.cpu_count(),
        "runs": rows,
        "within_10_percent": sum(r["wall_s"] <= 1.1 * r["limit_s"] for r in within),
        "budgeted_runs": len(within),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
