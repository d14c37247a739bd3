"""One retraining cycle, as ``imgclass retrain`` runs it.

1. fetch ``NAME@champion`` from the model registry; its original dataset is the one its
   model.json names (or ``data``, whose manifest hash is checked against it);
2. export the accepted feedback with the champion's recipe (train/test by content hash);
3. fine-tune a challenger (``imgclass.feedback.retrain``);
4. compare champion and challenger, write the report (``imgclass.feedback.promotion``);
5. record an MLflow run, register the challenger (alias ``challenger``) and promote it
   when the rule says so.

All work happens in the run folder; the feedback store is only read, and the registry
is written only after the challenger is complete and judged. A cycle killed at any
point before step 5 therefore leaves the champion and the store as they were, and the
next cycle starts afresh in its own folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imgclass.atomic import write_text
from imgclass.errors import DatasetError
from imgclass.feedback.dataset_export import SourceWeights
from imgclass.feedback.promotion import DEFAULT_ALPHA, DEFAULT_TOLERANCE, Comparison
from imgclass.feedback.retrain import FineTuneConfig, FineTuneResult

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("work/retrain")
RETRAIN_EXPERIMENT = "imgclass-retrain"


@dataclass
class RetrainOptions:
    """One cycle's settings. feedback_db: an SQLite path or SQLAlchemy URL. data: the
    champion's original dataset when its recorded path is not valid here. out: the run
    folder (default work/retrain/<name>-<time>). promote: False keeps the challenger a
    challenger whatever the comparison says."""

    registry: str
    feedback_db: str
    tracking_uri: str | None = None
    data: str | None = None
    out: str | None = None
    tolerance: float = DEFAULT_TOLERANCE
    alpha: float = DEFAULT_ALPHA
    test_fraction: float = 0.2
    promote: bool = True
    experiment: str = RETRAIN_EXPERIMENT
    cache_dir: str | None = None
    finetune: FineTuneConfig = field(default_factory=FineTuneConfig)
    weights: SourceWeights = field(default_factory=SourceWeights)  # sources, game weight


@dataclass
class RetrainOutcome:
    """What a cycle did: the versions involved, the numbers, the decision, where things are."""

    name: str
    champion_version: int
    challenger_version: int | None
    promoted: bool
    reasons: list[str]
    comparison: dict[str, Any]
    fine_tune: dict[str, Any]
    run_dir: str
    report_dir: str
    mlflow_run_id: str | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def original_dataset(desc: Any, data: str | None) -> Path:
    """The champion's original dataset folder: ``data`` or model.json's ``dataset.path``.
    A manifest that differs from the recorded hash is used with a warning."""
    from imgclass.data.store import manifest_hash

    recorded = desc.dataset
    path = Path(data or recorded.get("path") or "")
    if not (path / "manifest.json").is_file():
        raise DatasetError(
            f"the champion's original dataset {str(path) or '(unrecorded)'} is not here; "
            "pass --data DIR (its test split is the frozen yardstick, its training split "
            "the replay source)"
        )
    expected = recorded.get("manifest_sha256")
    if expected and manifest_hash(path) != expected:
        log.warning(
            "%s is not the dataset the champion was trained on (manifest sha256 differs): "
            "the original-test comparison may not mean what it should",
            path,
        )
    return path


def run_folder(options: RetrainOptions) -> Path:
    """A fresh run folder: ``out`` (emptied of an earlier, killed cycle's parts) or
    work/retrain/<name>-<UTC time>."""
    if options.out:
        out = Path(options.out)
        for part in ("feedback", "challenger", "comparison"):
            shutil.rmtree(out / part, ignore_errors=True)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        out = DEFAULT_ROOT / f"{options.registry}-{stamp}-{os.getpid()}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_retrain(options: RetrainOptions) -> RetrainOutcome:
    """Run one cycle (see the module docstring) and return what it did."""
    from imgclass.bundle import describe_bundle
    from imgclass.experiments.model_registry import ModelRegistry
    from imgclass.feedback.promotion import compare, write_report
    from imgclass.feedback.retrain import fine_tune

    started = time.perf_counter()
    options.finetune.check()
    registry = ModelRegistry(options.tracking_uri)
    champion_info = registry.get(options.registry, "champion")
    cache = Path(options.cache_dir) if options.cache_dir else None
    champion = registry.fetch_bundle(options.registry, champion_info.version, cache_dir=cache)
    original = original_dataset(describe_bundle(champion), options.data)
    out = run_folder(options)
    log.info("retraining %s version %d in %s", options.registry, champion_info.version, out)
    feedback = export(options, champion, out / "feedback")
    tuned = fine_tune(champion, feedback, original, out / "challenger", options.finetune)
    tuned = like_the_champion(champion, tuned, original)
    comparison = compare(
        champion, tuned.bundle, original, feedback, options.tolerance, options.alpha
    )
    record_scores(tuned.bundle, comparison)
    report = write_report(comparison, out / "comparison")
    run_id = track(options, comparison, report, tuned, champion_info.version)
    version, promoted, reasons = register(registry, options, tuned, comparison, champion_info)
    if run_id is not None:
        tag_run(options, run_id, version, promoted)
    return RetrainOutcome(
        options.registry,
        champion_info.version,
        version,
        promoted,
        reasons,
        comparison.to_dict(),
        fine_tune_summary(tuned),
        str(out),
        str(report),
        run_id,
        time.perf_counter() - started,
    )


def like_the_champion(champion: Path, tuned: FineTuneResult, original: Path) -> FineTuneResult:
    """An int8 champion gets an int8 challenger (quantized the same way, kept only when as
    accurate as its float self), so that a promotion does not slow serving down; the
    comparison then judges the model that would be served."""
    from dataclasses import replace

    from imgclass.bundle import describe_bundle

    if not describe_bundle(champion).model_json.get("quantization"):
        return tuned
    from imgclass.quantize import QuantizationRefused, quantize_bundle

    try:
        result = quantize_bundle(tuned.bundle, original, min_speedup=0)  # match the champion
    except QuantizationRefused as exc:
        log.warning("the champion is int8 but the challenger stays float: %s", exc)
        return tuned
    if result.out is None:
        return tuned
    log.info("challenger quantized like the champion: %s", result.out)
    return replace(tuned, bundle=result.out)


def export(options: RetrainOptions, champion: Path, out: Path) -> Path:
    """The accepted feedback as a prepared dataset with the champion's recipe."""
    from imgclass.feedback.dataset_export import export_feedback
    from imgclass.feedback.store import FeedbackStore

    with FeedbackStore.from_path_or_url(options.feedback_db) as store:
        return export_feedback(
            store,
            out,
            bundle=champion,
            test_fraction=options.test_fraction,
            seed=options.finetune.seed,
            overwrite=True,
            weights=options.weights,
        )


def record_scores(bundle: Path, comparison: Comparison) -> None:
    """Put the challenger's measured accuracies into its metrics.json and card.md (neither
    is covered by the model's hash), so the registry and people see them."""
    from imgclass.bundle import model_card, read_bundle_json

    labels, preprocess, metrics, info = read_bundle_json(bundle)
    for split, key in (("original_test", "test"), ("feedback_test", "feedback_test")):
        s = comparison.challenger[split]
        metrics[key] = {"accuracy": s.accuracy, "n": s.n}
    write_text(bundle / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_text(bundle / "card.md", model_card(labels, preprocess, metrics, info))


def track(
    options: RetrainOptions,
    comparison: Comparison,
    report: Path,
    tuned: FineTuneResult,
    champion_version: int,
) -> str | None:
    """The cycle's MLflow run; its ``bundle/`` artifacts are what the registry version
    points at (linked through out/challenger/mlflow_run.json)."""
    from imgclass.experiments.mlflow_store import ensure_experiment
    from imgclass.experiments.tracking import write_run_file
    from imgclass.feedback.promotion import track_comparison

    params = {
        "registry": options.registry,
        "champion_version": champion_version,
        "tolerance": options.tolerance,
        "alpha": options.alpha,
        "test_fraction": options.test_fraction,
        **{f"finetune.{k}": v for k, v in asdict(options.finetune).items()},
        "method": tuned.method,
        "feedback_examples": tuned.n_feedback,
        "replayed_examples": tuned.n_replay,
        "new_labels": ",".join(tuned.new_labels),
    }
    run_id, uri = track_comparison(
        comparison,
        report,
        uri=options.tracking_uri,
        experiment=options.experiment,
        run_name=f"retrain-{options.registry}-v{champion_version}",
        params=params,
        tags={"imgclass.registered_name": options.registry},
        bundle=tuned.bundle,
    )
    write_run_file(tuned.bundle.parent, uri, ensure_experiment(options.experiment, uri), run_id)
    return run_id


def register(
    registry: Any,
    options: RetrainOptions,
    tuned: FineTuneResult,
    comparison: Comparison,
    champion_info: Any,
) -> tuple[int, bool, list[str]]:
    """Register the challenger; promote it when the rule says so, promotion is allowed
    and the champion is still the one it was compared with. Returns (version, promoted,
    reasons)."""
    decision = comparison.decision
    reasons = list(decision.reasons)
    tags = {
        "imgclass.retrained_from": str(champion_info.version),
        "imgclass.decision": "promote" if decision.promote else "keep",
    }
    info = registry.register(
        tuned.bundle,
        options.registry,
        description=f"retrained from version {champion_info.version} on feedback",
        tags=tags,
        alias="challenger",
    )
    if not decision.promote:
        return info.version, False, reasons
    if not options.promote:
        return info.version, False, [*reasons, "not promoted: --no-promote"]
    now = registry.get(options.registry, "champion")
    if now.version != champion_info.version:
        note = (
            f"not promoted: the champion changed to version {now.version} during the retrain "
            f"(it was compared with version {champion_info.version})"
        )
        return info.version, False, [*reasons, note]
    registry.promote(options.registry, info.version)
    return info.version, True, reasons


def tag_run(options: RetrainOptions, run_id: str, version: int, promoted: bool) -> None:
    """Link the MLflow run to the registered challenger (best effort)."""
    from mlflow.tracking import MlflowClient

    from imgclass.experiments.mlflow_store import resolve_tracking_uri

    uri = resolve_tracking_uri(options.tracking_uri)
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.set_tag(run_id, "imgclass.challenger_version", str(version))
        client.set_tag(run_id, "imgclass.promoted", str(promoted).lower())
    except Exception as exc:  # the registry already holds the truth
        log.warning("could not tag MLflow run %s: %s", run_id, exc)


def fine_tune_summary(tuned: FineTuneResult) -> dict[str, Any]:
    last = tuned.history[-1] if tuned.history else {}
    return {
        "bundle": str(tuned.bundle),
        "method": tuned.method,
        "labels": len(tuned.labels),
        "new_labels": tuned.new_labels,
        "feedback_examples": tuned.n_feedback,
        "replayed_examples": tuned.n_replay,
        "frozen_parameters": tuned.frozen_parameters,
        "epochs": len(tuned.history),
        "final_train_accuracy": last.get("train_accuracy"),
        "seconds": round(tuned.seconds, 2),
    }
