"""The pictures of an Optuna study: its optimisation history and parameter importances.

Drawn with matplotlib (Agg backend, imported here only) rather than Optuna's plotly
charts, so they need nothing beyond imgclass's dependencies and show pruned trials too.
Each picture is written to a temporary file and renamed, never left half-written.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgclass import atomic

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

MIN_FOR_IMPORTANCE = 3  # fewer completed trials say nothing about importances


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def message_figure(title: str, text: str) -> Any:
    """A picture that says why there is nothing to draw (instead of no picture)."""
    fig, ax = _plt().subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    return fig


def history_points(study: optuna.Study) -> dict[str, list[tuple[int, float]]]:
    """(trial number, value) per state: complete trials' values, pruned trials' last
    reported score; failed trials have none."""
    points: dict[str, list[tuple[int, float]]] = {"complete": [], "pruned": []}
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name == "COMPLETE" and trial.value is not None:
            points["complete"].append((trial.number, float(trial.value)))
        elif trial.state.name == "PRUNED" and trial.intermediate_values:
            last = max(trial.intermediate_values)
            points["pruned"].append((trial.number, float(trial.intermediate_values[last])))
    return points


def plot_history(study: optuna.Study, path: Path, metric: str = "val_accuracy") -> Path:
    """``path``: each trial's score by trial number, pruned ones marked, and the best
    score so far as a line."""
    points = history_points(study)
    if not points["complete"] and not points["pruned"]:
        fig = message_figure(f"study {study.study_name}", "no finished trial yet")
        return atomic.save_figure(fig, path, close=True)
    fig, ax = _plt().subplots(figsize=(7, 4))
    if points["complete"]:
        xs, ys = zip(*points["complete"], strict=True)
        ax.scatter(xs, ys, color="tab:blue", label="complete", zorder=3)
        best, line = -float("inf"), []
        for x, y in points["complete"]:
            best = max(best, y)
            line.append((x, best))
        last = max(x for x, _ in points["complete"] + points["pruned"])
        line.append((last, best))  # the best so far runs to the last trial
        bx, by = zip(*line, strict=True)
        ax.step(bx, by, where="post", color="tab:red", label="best so far")
    if points["pruned"]:
        xs, ys = zip(*points["pruned"], strict=True)
        ax.scatter(xs, ys, color="grey", marker="x", label="pruned (last score)", zorder=2)
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(_plt().MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.set_title(f"study {study.study_name}: optimisation history")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return atomic.save_figure(fig, path, close=True)


def importances(study: optuna.Study) -> dict[str, float] | None:
    """Optuna's fANOVA importance of each parameter over the completed trials, or None
    when it cannot be estimated (too few trials, a single parameter value)."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < MIN_FOR_IMPORTANCE:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            found = optuna.importance.get_param_importances(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            log.info("parameter importances not estimated: %s", exc)
            return None
    return {k: float(v) for k, v in found.items()} or None


def plot_importance(study: optuna.Study, path: Path) -> Path:
    """``path``: a bar per parameter (importance summing to 1), or a picture saying why
    the importances could not be estimated yet."""
    found = importances(study)
    if found is None:
        n = sum(1 for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE")
        log.info("too few completed trials (%d) for parameter importances", n)
        fig = message_figure(
            "parameter importances",
            f"not enough completed trials to estimate them ({n}; need at least "
            f"{MIN_FOR_IMPORTANCE} with different values)",
        )
        return atomic.save_figure(fig, path, close=True)
    names = list(found)[::-1]  # most important on top
    fig, ax = _plt().subplots(figsize=(7, 0.45 * len(names) + 1.5))
    ax.barh(names, [found[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (fANOVA, sums to 1)")
    ax.set_title(f"study {study.study_name}: parameter importances")
    ax.grid(axis="x", alpha=0.3)
    return atomic.save_figure(fig, path, close=True)
