"""Champion against challenger: the comparison, the promotion rule, the report.

Both models are measured on the same two sets:

- the champion's *original* test split (frozen: the test split of the dataset named in
  its model.json), which says whether the challenger forgot what the champion knew;
- the *held-out feedback* (the test split of the feedback export, chosen by content
  hash, so a submission never moves between training and judging), which says whether
  it learned from the corrections. The champion cannot name labels it does not know:
  those examples count as its mistakes.

The rule: promote only when the original-test accuracy drops by at most ``tolerance``
points (default 0.5) *and* the feedback accuracy strictly improves, and only when there
is held-out feedback to judge on. With ``alpha`` > 0 (default 0.05) the improvement must
also be more than luck: an exact one-sided McNemar (sign) test on the held-out
submissions that exactly one of the two models gets right. Poisoned corrections (random
labels) cannot be learned, so their "improvement" is noise and fails this test. Either way ``comparison.json``, ``comparison.md`` and
``per_class_changes.png`` are written, and ``track_comparison`` records them as an
MLflow run.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclass.atomic import save_figure, write_text

if TYPE_CHECKING:
    from imgclass.bundle import Bundle
    from imgclass.data.store import PreparedDataset

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 0.5  # points of original-test accuracy the challenger may lose
DEFAULT_ALPHA = 0.05  # the feedback gain must be significant at this level (0: any gain)
SPLITS = ("original_test", "feedback_test")


@dataclass
class Score:
    """Accuracy of one model on one labelled set; per_class: {label: {n, accuracy}}."""

    accuracy: float
    n: int
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    hits: np.ndarray | None = field(default=None, repr=False, compare=False)  # per example

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "n": self.n, "per_class": self.per_class}


@dataclass(frozen=True)
class Decision:
    """promote: whether the challenger should become champion; reasons: why (or why not),
    one sentence each; drop: original-test accuracy lost, in points (negative: gained)."""

    promote: bool
    reasons: tuple[str, ...]
    drop: float
    gain: float
    p_value: float | None = None  # of the feedback gain (None: not tested)


@dataclass
class Comparison:
    """The two models' scores on both sets and the decision."""

    champion: dict[str, Score]
    challenger: dict[str, Score]
    decision: Decision
    tolerance: float
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": {"promote": self.decision.promote, "reasons": list(self.decision.reasons)},
            "tolerance_points": self.tolerance,
            "original_test_drop_points": round(self.decision.drop, 4),
            "feedback_gain_points": round(self.decision.gain, 4),
            "feedback_gain_p_value": self.decision.p_value,
            "champion": {k: v.to_dict() for k, v in self.champion.items()},
            "challenger": {k: v.to_dict() for k, v in self.challenger.items()},
            "per_class_changes": {s: per_class_changes(self, s) for s in SPLITS},
            **self.info,
        }


# --- the rule ------------------------------------------------------------------------


def sign_test(fixed: int, broken: int) -> float:
    """One-sided exact McNemar p-value: the chance of ``fixed`` or more of the
    ``fixed + broken`` discordant examples going the challenger's way if both models were
    equally good. fixed: examples only the challenger gets right; broken: only the champion."""
    n = fixed + broken
    if n == 0:
        return 1.0
    tail: float = sum(math.comb(n, k) for k in range(fixed, n + 1)) / 2**n
    return min(1.0, tail)


def decide(
    original_before: float,
    original_after: float,
    feedback_before: float,
    feedback_after: float,
    n_feedback_test: int,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    discordant: tuple[int, int] | None = None,
    alpha: float = 0.0,
) -> Decision:
    """Promote only when the original-test accuracy (fractions in [0, 1]) drops by at
    most ``tolerance`` points and the held-out feedback accuracy strictly improves; with
    ``alpha`` > 0 and ``discordant`` = (fixed, broken) counts on the held-out feedback,
    the improvement must also pass ``sign_test`` at that level."""
    drop = 100 * (original_before - original_after)
    gain = 100 * (feedback_after - feedback_before)
    p_value = sign_test(*discordant) if discordant is not None and alpha > 0 else None
    problems = []
    if n_feedback_test == 0:
        problems.append(
            "there is no held-out feedback to judge the challenger on (accept more feedback)"
        )
    if drop > tolerance + 1e-9:
        problems.append(
            f"original-test accuracy dropped {drop:.2f} points "
            f"({100 * original_before:.2f}% -> {100 * original_after:.2f}%), more than the "
            f"tolerance of {tolerance:g}"
        )
    if n_feedback_test and gain <= 1e-9:
        problems.append(
            f"feedback accuracy did not improve ({100 * feedback_before:.2f}% -> "
            f"{100 * feedback_after:.2f}% on {n_feedback_test} held-out submissions)"
        )
    elif n_feedback_test and p_value is not None and p_value >= alpha:
        fixed, broken = discordant or (0, 0)
        problems.append(
            f"the feedback gain may be luck: the challenger alone is right on {fixed} and the "
            f"champion alone on {broken} held-out submissions (p = {p_value:.3g}, needs < "
            f"{alpha:g}); random or contradictory labels look like this"
        )
    if problems:
        return Decision(False, tuple(problems), drop, gain, p_value)
    reason = (
        f"original-test accuracy {100 * original_before:.2f}% -> {100 * original_after:.2f}% "
        f"(drop {drop:.2f} <= {tolerance:g} points) and feedback accuracy "
        f"{100 * feedback_before:.2f}% -> {100 * feedback_after:.2f}% on {n_feedback_test} "
        "held-out submissions" + (f" (p = {p_value:.3g})" if p_value is not None else "")
    )
    return Decision(True, (reason,), drop, gain, p_value)


# --- scoring -------------------------------------------------------------------------


def split_proba(bundle: Bundle, ds: PreparedDataset, split: str) -> np.ndarray:
    """The bundle's probabilities (n, K) on a whole split, read in batches."""
    if not ds.size(split):
        return np.zeros((0, len(bundle.labels)), np.float32)
    if bundle.input_kind == "sequence":
        from imgclass.data.sequences import encode_drawings

        spec = bundle.preprocess["input"]
        raw = ds.manifest.get("stroke_kind") == "raw"
        seqs, lengths = encode_drawings(
            ds.all_strokes(split), spec["format"], spec["max_len"], raw=raw
        )
        return np.asarray(bundle.predict_sequences(seqs, lengths))
    from imgclass.data.store import BatchPlan

    batches = ds.iter_batches(split, BatchPlan(1024, shuffle=False))
    parts = [bundle.predict_proba(images) for images, _, _ in batches]
    return np.concatenate(parts)


def score(predicted: list[str], truth: list[str]) -> Score:
    """Accuracy overall and per true label, comparing label names."""
    hits = np.array([p == t for p, t in zip(predicted, truth, strict=True)], dtype=bool)
    per_class: dict[str, dict[str, float]] = {}
    truth_arr = np.asarray(truth, dtype=object)
    for name in dict.fromkeys(truth):
        members = truth_arr == name
        per_class[name] = {"n": int(members.sum()), "accuracy": float(hits[members].mean())}
    return Score(float(hits.mean()) if len(hits) else 0.0, len(hits), per_class, hits)


def score_bundle(bundle: Bundle, ds: PreparedDataset, split: str) -> Score:
    """The bundle's accuracy on a split, labels matched by name (a label the model does
    not know is always a mistake)."""
    if split not in ds.splits:
        return Score(0.0, 0)
    proba = split_proba(bundle, ds, split)
    predicted = [bundle.labels[i] for i in proba.argmax(axis=1)]
    truth = [ds.classes[i] for i in ds.labels(split)]
    return score(predicted, truth)


def compare(
    champion: str | Path,
    challenger: str | Path,
    original_dir: str | Path,
    feedback_dir: str | Path,
    tolerance: float = DEFAULT_TOLERANCE,
    alpha: float = DEFAULT_ALPHA,
) -> Comparison:
    """Score both bundles on the original test split and the held-out feedback; decide."""
    from imgclass.bundle import load_bundle
    from imgclass.data.store import PreparedDataset

    scores: dict[str, dict[str, Score]] = {"champion": {}, "challenger": {}}
    with PreparedDataset.open(original_dir) as orig, PreparedDataset.open(feedback_dir) as fb:
        if "test" not in orig.splits:
            from imgclass.errors import DatasetError

            raise DatasetError(f"{orig.path} has no test split to compare the models on")
        for role, path in (("champion", champion), ("challenger", challenger)):
            bundle = load_bundle(path, threads=0)
            scores[role]["original_test"] = score_bundle(bundle, orig, "test")
            scores[role]["feedback_test"] = score_bundle(bundle, fb, "test")
    before, after = scores["champion"], scores["challenger"]
    decision = decide(
        before["original_test"].accuracy,
        after["original_test"].accuracy,
        before["feedback_test"].accuracy,
        after["feedback_test"].accuracy,
        after["feedback_test"].n,
        tolerance,
        discordant=discordant(before["feedback_test"], after["feedback_test"]),
        alpha=alpha,
    )
    return Comparison(before, after, decision, tolerance)


def discordant(before: Score, after: Score) -> tuple[int, int]:
    """(examples only ``after`` gets right, examples only ``before`` gets right)."""
    if before.hits is None or after.hits is None or not len(after.hits):
        return 0, 0
    return int((after.hits & ~before.hits).sum()), int((before.hits & ~after.hits).sum())


def per_class_changes(comparison: Comparison, split: str) -> dict[str, dict[str, float]]:
    """{label: {n, before, after, change}} on one set (accuracies as fractions)."""
    before = comparison.champion[split].per_class
    after = comparison.challenger[split].per_class
    out = {}
    for name, row in after.items():
        old = before.get(name, {"accuracy": 0.0})["accuracy"]
        out[name] = {
            "n": row["n"],
            "before": old,
            "after": row["accuracy"],
            "change": row["accuracy"] - old,
        }
    return out


# --- the report ----------------------------------------------------------------------


def write_report(comparison: Comparison, out: str | Path) -> Path:
    """``out/comparison.json``, ``out/comparison.md`` and ``out/per_class_changes.png``
    (each written to a temporary name and renamed); returns ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = comparison.to_dict()
    write_text(out / "comparison.json", json.dumps(data, indent=2) + "\n")
    write_text(out / "comparison.md", markdown(comparison))
    save_figure(change_figure(comparison), out / "per_class_changes.png", close=True)
    return out


def markdown(comparison: Comparison) -> str:
    """comparison.md: the two accuracies before and after, the decision and why, and the
    per-class changes."""
    d = comparison.decision
    lines = [
        "# Champion vs challenger",
        "",
        f"**Decision: {'promote' if d.promote else 'keep the champion'}**",
        "",
        *[f"- {reason}" for reason in d.reasons],
        "",
        "| set | n | champion | challenger | change (points) |",
        "|---|---:|---:|---:|---:|",
    ]
    for split in SPLITS:
        a, b = comparison.champion[split], comparison.challenger[split]
        lines.append(
            f"| {split.replace('_', ' ')} | {b.n} | {100 * a.accuracy:.2f}% | "
            f"{100 * b.accuracy:.2f}% | {100 * (b.accuracy - a.accuracy):+.2f} |"
        )
    for split in SPLITS:
        changes = per_class_changes(comparison, split)
        if not changes:
            continue
        lines += ["", f"## Per class: {split.replace('_', ' ')}", ""]
        lines += ["| label | n | champion | challenger | change |", "|---|---:|---:|---:|---:|"]
        for name, row in sorted(changes.items(), key=lambda kv: kv[1]["change"]):
            lines.append(
                f"| {name} | {row['n']} | {100 * row['before']:.1f}% | "
                f"{100 * row['after']:.1f}% | {100 * row['change']:+.1f} |"
            )
    return "\n".join(lines) + "\n"


def change_figure(comparison: Comparison, show: int = 30) -> Any:
    """Bars of per-class accuracy change (points) on each set, worst first; at most
    ``show`` classes a panel (the largest changes either way)."""
    from imgclass.evaluate.plots import _plt

    plt = _plt()
    figure, axes = plt.subplots(1, 2, figsize=(11, 0.25 * show + 1.5), squeeze=False)
    for ax, split in zip(axes[0], SPLITS, strict=True):
        changes = per_class_changes(comparison, split)
        rows = sorted(changes.items(), key=lambda kv: abs(kv[1]["change"]), reverse=True)[:show]
        rows.sort(key=lambda kv: kv[1]["change"])
        values = [100 * r["change"] for _, r in rows]
        colours = ["#c0392b" if v < 0 else "#27ae60" for v in values]
        ax.barh([n for n, _ in rows], values, color=colours)
        ax.axvline(0, color="black", linewidth=0.8)
        a, b = comparison.champion[split], comparison.challenger[split]
        ax.set_title(
            f"{split.replace('_', ' ')}: {100 * a.accuracy:.1f}% -> {100 * b.accuracy:.1f}% "
            f"(n={b.n})",
            fontsize=10,
        )
        ax.set_xlabel("accuracy change (points)")
    verdict = "promoted" if comparison.decision.promote else "not promoted"
    figure.suptitle(f"Challenger vs champion, per class ({verdict})")
    figure.tight_layout()
    return figure


# --- tracking ------------------------------------------------------------------------


def track_comparison(
    comparison: Comparison,
    report_dir: Path,
    *,
    uri: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    bundle: Path | None = None,
) -> tuple[str, str]:
    """An MLflow run holding the retrain's params, both models' accuracies, the decision
    and the report (artifacts under ``comparison/``; the challenger under ``bundle/``).
    Returns (run id, tracking uri)."""
    from mlflow.tracking import MlflowClient

    from imgclass.experiments.mlflow_store import configure, ensure_experiment
    from imgclass.experiments.tracking import flatten

    resolved = configure(uri, experiment)
    client = MlflowClient(tracking_uri=resolved, registry_uri=resolved)
    experiment_id = ensure_experiment(experiment or "imgclass", resolved)
    d = comparison.decision
    all_tags = {
        "imgclass.kind": "retrain",
        "imgclass.decision": "promote" if d.promote else "keep",
        **(tags or {}),
    }
    run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    run_id = run.info.run_id
    try:
        for key, value in flatten(dict(params or {})).items():
            client.log_param(run_id, key[:250], value)
        for metric, number in comparison_metrics(comparison).items():
            client.log_metric(run_id, metric, number)
        client.log_artifacts(run_id, str(report_dir), "comparison")
        if bundle is not None:
            client.log_artifacts(run_id, str(bundle), "bundle")
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id, resolved


def comparison_metrics(comparison: Comparison) -> dict[str, float]:
    """Flat numbers for MLflow: both accuracies on both sets, the drop, the decision."""
    out: dict[str, float] = {}
    for role, scores in (("champion", comparison.champion), ("challenger", comparison.challenger)):
        for split, s in scores.items():
            out[f"{role}_{split}_accuracy"] = s.accuracy
            out[f"{split}_n"] = float(s.n)
    out["original_test_drop_points"] = comparison.decision.drop
    out["feedback_gain_points"] = comparison.decision.gain
    out["promoted"] = float(comparison.decision.promote)
    return out
