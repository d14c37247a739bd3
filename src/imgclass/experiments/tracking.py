"""MLflow tracking of training runs: where runs are stored and what each one records.

Every ``imgclass train`` is a run in a local MLflow store unless told otherwise. The
store is, in order of precedence, ``--tracking-uri``, ``$MLFLOW_TRACKING_URI``, or
``sqlite:///<cwd>/work/mlflow/mlflow.db`` with artifacts in ``work/mlflow/artifacts``
(next to ``work/feedback.sqlite3``); ``imgclass.experiments.mlflow_store`` resolves and
opens it for tracking, tuning, the run list and the model registry alike.

A run records the resolved configuration (params), per-epoch metrics (step = epoch),
the final valid/test metrics, the dataset (name, path, manifest hash and sources), the
system and library versions, the bundle (artifacts under ``bundle/``), the evaluation
pictures (under ``report/``) and the ONNX model as an MLflow model with a signature.
``RUNDIR/mlflow_run.json`` links the run folder to its run.

mlflow is imported only when tracking is on: a disabled ``Tracker`` is a no-op.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from imgclass.atomic import write_text
from imgclass.experiments.mlflow_store import configure, import_mlflow, store_error

if TYPE_CHECKING:
    from imgclass.train.config import TrainConfig
    from imgclass.train.run import TrainOutcome

log = logging.getLogger(__name__)

RUN_FILE = "mlflow_run.json"
SUMMARY_KEYS = (
    "n",
    "accuracy",
    "top3_accuracy",
    "map3",
    "macro_f1",
    "ece",
    "ece_uncalibrated",
    "temperature",
)
VERSIONED = ("torch", "numpy", "onnx", "onnxruntime", "scikit-learn", "mlflow", "imgclass")
# MLflow's limits (mlflow.utils.validation); a longer value is cut, not refused.
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
PARAM_BATCH = 100


# --- what a run records --------------------------------------------------------------


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as dotted keys with string values cut to MLflow's limit:
    ``{"augment": {"rotation": 15.0}}`` -> ``{"augment.rotation": "15.0"}``."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:MAX_PARAM_LENGTH]
    return out


def system_params() -> dict[str, str]:
    """Python, platform, CPU count and the versions of the libraries that matter."""
    import importlib.metadata as md

    out = {
        "system.python": platform.python_version(),
        "system.platform": platform.platform(),
        "system.cpu_count": str(os.cpu_count() or 0),
    }
    for name in VERSIONED:
        try:
            out[f"version.{name}"] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def git_commit(cwd: Path | None = None) -> str | None:
    """``git rev-parse HEAD`` in ``cwd``, or None outside a repository or without git."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def read_manifest(data_dir: Path) -> dict[str, Any]:
    """The dataset's manifest.json ({} when unreadable: tracking never fails a run)."""
    try:
        loaded = json.loads((data_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def dataset_tags(data_dir: Path) -> dict[str, str]:
    """Name, absolute path, manifest sha256 and source files of the prepared dataset."""
    from imgclass.data.store import manifest_hash

    manifest = read_manifest(data_dir)
    sources = [
        {"path": s.get("path"), "format": s.get("format"), "sha256": s.get("sha256")}
        for s in manifest.get("sources", [])
        if isinstance(s, dict)
    ]
    tags = {
        "imgclass.dataset": data_dir.resolve().name,
        "imgclass.dataset_path": str(data_dir.resolve()),
        "imgclass.dataset_source": json.dumps(sources)[:MAX_TAG_LENGTH],
    }
    with suppress(OSError):
        tags["imgclass.dataset_manifest_sha256"] = manifest_hash(data_dir)
    return tags


def run_tags(cfg: TrainConfig, data_dir: Path, extra: Mapping[str, str] | None) -> dict[str, str]:
    """Family, model, dataset, git commit (when in a repository), plus ``extra``."""
    from imgclass.models import model_info

    info = model_info(cfg.model)
    tags = {
        "imgclass.family": info.family,
        "imgclass.model": cfg.model,
        "imgclass.framework": info.framework,
        **dataset_tags(data_dir),
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    tags.update({str(k): str(v)[:MAX_TAG_LENGTH] for k, v in (extra or {}).items()})
    return tags


def default_run_name(cfg: TrainConfig, data_dir: Path) -> str:
    """``<model>-<dataset folder>-<YYYYmmdd-HHMM>``, e.g. ``cnn-resnet-doodles-20261126-2235``."""
    return f"{cfg.model}-{data_dir.resolve().name}-{time.strftime('%Y%m%d-%H%M')}"


def data_params(data_dir: Path) -> dict[str, str]:
    """Classes, counts per split and image shape of the prepared dataset."""
    manifest = read_manifest(data_dir)
    out = {"data.num_classes": str(manifest.get("num_classes", ""))}
    for split, count in (manifest.get("counts") or {}).items():
        out[f"data.{split}_size"] = str(count)
    out["data.image_shape"] = json.dumps(manifest.get("image_shape"))
    out["data.recipe"] = str((manifest.get("recipe") or {}).get("name", ""))
    return out


def final_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """metrics.json's summary numbers: ``test_accuracy``, ``valid_top3_accuracy``, ...,
    ``train_seconds``, ``total_seconds``, ``epochs`` and ``best_epoch`` (torch runs),
    ``cv_accuracy`` (grid searches)."""
    out: dict[str, float] = {}
    for split in ("valid", "test"):
        for key in SUMMARY_KEYS:
            value = (metrics.get(split) or {}).get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[f"{split}_{key}"] = float(value)
    for key in ("train_seconds", "total_seconds", "best_epoch"):
        if isinstance(metrics.get(key), int | float):
            out[key] = float(metrics[key])
    if metrics.get("history"):
        out["epochs"] = float(len(metrics["history"]))
    holdout = metrics.get("holdout") or {}
    if isinstance(holdout.get("accuracy"), int | float):
        out["holdout_accuracy"] = float(holdout["accuracy"])
    search = metrics.get("search") or {}
    if isinstance(search.get("cv_accuracy"), int | float):
        out["cv_accuracy"] = float(search["cv_accuracy"])
    out.update(budget_metrics(metrics))
    return out


def budget_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """What a time budget bought, as ``budget_<key>`` metrics (``budget_epochs_planned``,
    ``budget_samples_per_second``, ...); nothing for a run without one."""
    budget = metrics.get("budget") or {}
    return {
        f"budget_{key}": float(value)
        for key, value in budget.items()
        if isinstance(value, int | float)
    }


def write_run_file(out: Path, uri: str, experiment_id: str, run_id: str) -> Path:
    """``RUNDIR/mlflow_run.json`` (written atomically): which run this folder belongs to,
    for ``imgclass models register``."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"tracking_uri": uri, "experiment_id": experiment_id, "run_id": run_id}
    return write_text(out / RUN_FILE, json.dumps(record, indent=1) + "\n")


def read_run_file(run_dir: str | Path) -> dict[str, str] | None:
    """The ``mlflow_run.json`` of a run folder (or of the bundle inside one), or None."""
    run_dir = Path(run_dir)
    for folder in (run_dir, run_dir.parent):
        try:
            loaded = json.loads((folder / RUN_FILE).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(loaded, dict) and loaded.get("run_id"):
            return {str(k): str(v) for k, v in loaded.items()}
    return None


# --- the model ----------------------------------------------------------------------


def onnx_signature(model: Any) -> Any:
    """The MLflow signature of an ONNX graph: its inputs and outputs as tensors, dynamic
    axes (the batch) as -1, e.g. ``input`` float32 (-1, 1, 28, 28) -> ``probabilities``
    float32 (-1, K)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec
    from onnx import helper

    initialised = {t.name for t in model.graph.initializer}

    def specs(values: Any) -> Any:
        out: list[Any] = []
        for value in values:
            if value.name in initialised:
                continue
            tensor = value.type.tensor_type
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
            out.append(TensorSpec(dtype, shape, value.name))
        return Schema(out)

    return ModelSignature(inputs=specs(model.graph.input), outputs=specs(model.graph.output))


def serving_requirements() -> list[str]:
    """What running the ONNX model needs, pinned to this machine's versions (given
    explicitly so MLflow never infers them, which would reach for the network)."""
    import importlib.metadata as md

    out = []
    for name in ("onnx", "onnxruntime", "numpy"):
        try:
            out.append(f"{name}=={md.version(name)}")
        except md.PackageNotFoundError:
            out.append(name)
    return out


def log_onnx_model(run_id: str, bundle_dir: Path) -> Any:
    """The bundle's model.onnx as the run's MLflow model ``model`` (flavour onnx, with its
    signature), so ``mlflow models`` tools and the model registry can use it."""
    import mlflow.onnx
    import onnx

    model = onnx.load(str(bundle_dir / "model.onnx"))
    return mlflow.onnx.log_model(
        model,
        name="model",
        signature=onnx_signature(model),
        pip_requirements=serving_requirements(),
        save_as_external_data=False,
        run_id=run_id,
    )


# --- the tracker ---------------------------------------------------------------------


class Tracker:
    """Logs one training run; every method is a no-op when ``run_id`` is None (tracking
    off, or a torchrun process other than rank 0)."""

    def __init__(
        self,
        run_id: str | None = None,
        uri: str | None = None,
        experiment_id: str | None = None,
        out: Path | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.run_id = run_id
        self.uri = uri
        self.experiment_id = experiment_id
        self.out = out
        self.data_dir = data_dir
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    def _client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def log_params(self, params: Mapping[str, str]) -> None:
        """Params in batches of MLflow's maximum size."""
        if not self.enabled:
            return
        from mlflow.entities import Param

        items = [Param(k[:250], v) for k, v in params.items()]
        client = self._client()
        for start in range(0, len(items), PARAM_BATCH):
            client.log_batch(self.run_id, params=items[start : start + PARAM_BATCH])

    def log_metrics(self, values: Mapping[str, float], step: int = 0) -> None:
        """Numbers as metrics at ``step`` (non-numbers skipped)."""
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step)
            for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        if items:
            self._client().log_batch(self.run_id, metrics=items)

    def callback(self, epoch: int, row: dict[str, float]) -> None:
        """For ``train(..., callbacks=[tracker.callback])``: each value of the epoch's row
        (train_loss, val_accuracy, lr, seconds, ...) as a metric at step ``epoch``. A store
        that fails mid-run is reported once and does not stop the training."""
        if not self.enabled:
            return
        try:
            self.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
        except Exception as exc:  # the training matters more than its record
            if not self._warned:
                log.warning("MLflow could not record epoch %d (%s); training goes on", epoch, exc)
                self._warned = True

    def finish(
        self, outcome: TrainOutcome, report_dir: Path | None = None, *, pictures: bool = True
    ) -> None:
        """Record the end of a run: final metrics, the bundle under ``bundle/``, the run's
        config.yaml, the report pictures under ``report/`` and the ONNX model.

        report_dir: an evaluation report folder to log; None makes one in RUNDIR/report
        from the bundle on the test split (``pictures=False`` skips it, e.g. for the many
        trials of a search).
        """
        if self.run_id is None or outcome.bundle is None:
            return
        started = time.perf_counter()
        self.log_metrics(final_metrics(outcome.metrics))
        self.log_search(outcome.metrics)
        client = self._client()
        self.log_budget(client, outcome)
        client.log_artifacts(self.run_id, str(outcome.bundle), "bundle")
        config = outcome.bundle.parent / "config.yaml"
        if config.is_file():
            client.log_artifact(self.run_id, str(config))
        folder = report_dir or (self._pictures(outcome.bundle) if pictures else None)
        if folder is not None and Path(folder).is_dir():
            client.log_artifacts(self.run_id, str(folder), "report")
        try:
            log_onnx_model(self.run_id, outcome.bundle)
        except Exception as exc:  # the bundle is recorded; the MLflow model is a convenience
            log.warning("the ONNX model was not logged as an MLflow model: %s", exc)
        log.info("MLflow run %s recorded (%.1f s)", self.run_id, time.perf_counter() - started)

    def log_budget(self, client: Any, outcome: TrainOutcome) -> None:
        """Under a time budget: the seconds the whole run used (until the bundle was
        written) as ``budget_seconds_used``, and tags that say what the budget bought."""
        budget = outcome.metrics.get("budget")
        if not isinstance(budget, Mapping) or self.run_id is None:
            return
        self.log_metrics({"budget_seconds_used": outcome.seconds})
        limit = float(budget.get("time_limit_seconds", 0))
        tags = {
            "imgclass.time_limit": f"{limit:g} s",
            "imgclass.budget_bought": (
                f"{budget.get('epochs_done')} of {budget.get('epochs_cap')} epochs"
                f" ({float(budget.get('fraction_of_epoch', 1)):.0%} of each)"
                f" in {outcome.seconds:.0f} s"
            ),
        }
        for key, value in tags.items():
            client.set_tag(self.run_id, key, value)

    def log_search(self, metrics: Mapping[str, Any]) -> None:
        """A grid search's best settings as ``search.<name>`` params."""
        best = (metrics.get("search") or {}).get("best_params")
        if isinstance(best, Mapping) and best:
            self.log_params(flatten(best, "search."))

    def _pictures(self, bundle_dir: Path) -> Path | None:
        """make_report, a failure of which is a warning: the run itself succeeded."""
        try:
            return self.make_report(bundle_dir)
        except Exception as exc:
            log.warning("no report pictures for the MLflow run: %s", exc)
            return None

    def make_report(self, bundle_dir: Path) -> Path | None:
        """RUNDIR/report: the compact evaluation report of the bundle on the test split
        (valid when there is none); None when neither exists."""
        from imgclass.experiments.run_report import write_run_report

        if self.data_dir is None:
            return None
        return write_run_report(bundle_dir.parent / "report", bundle_dir, self.data_dir)


def is_main_process() -> bool:
    """False on torchrun processes other than rank 0 (they never track)."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


def failure_status(exc: BaseException) -> str:
    """KILLED for an interrupt, a stop or a pruned trial; FAILED for an error."""
    if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
        return "KILLED"
    return "KILLED" if type(exc).__name__ == "TrialPruned" else "FAILED"


def resumable_run(out: Path, uri: str) -> str | None:
    """The run id in RUNDIR/mlflow_run.json when that run is in the store at ``uri`` and
    not deleted (``--resume`` then continues it rather than starting a new one)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    record = read_run_file(out)
    if record is None or record.get("tracking_uri") != uri:
        return None
    try:
        run = MlflowClient(tracking_uri=uri).get_run(record["run_id"])
    except MlflowException:
        return None
    return run.info.run_id if run.info.lifecycle_stage == "active" else None


def start_run(
    cfg: TrainConfig,
    data_dir: Path,
    out: Path,
    uri: str | None,
    experiment: str | None,
    run_name: str | None,
    nested: bool,
    tags: Mapping[str, str] | None,
    resume: bool = False,
) -> Tracker:
    """Configure the store and start the MLflow run (continue RUNDIR's run on resume)."""
    mlflow = import_mlflow()
    parent = mlflow.active_run() if nested else None
    if parent is not None and experiment is None:  # a trial goes where its search is
        experiment = mlflow.get_experiment(parent.info.experiment_id).name
    resolved = configure(uri, experiment)
    all_tags = run_tags(cfg, data_dir, tags)
    try:
        previous = resumable_run(out, resolved) if resume else None
        if previous is not None:
            log.info("continuing MLflow run %s", previous)
            run = mlflow.start_run(run_id=previous, nested=nested)
            mlflow.set_tags(all_tags)
        else:
            name = run_name or default_run_name(cfg, data_dir)
            run = mlflow.start_run(run_name=name, nested=nested, tags=all_tags)
    except Exception as exc:
        raise store_error(resolved, exc) from exc
    return Tracker(run.info.run_id, resolved, run.info.experiment_id, out, data_dir)


def record_setup(tracker: Tracker, cfg: TrainConfig, data_dir: Path, out: Path) -> None:
    """Params (config, data, system), the manifest, and RUNDIR/mlflow_run.json."""
    if tracker.run_id is None or tracker.uri is None:
        return
    params = {**flatten(cfg.to_dict()), **data_params(data_dir), **system_params()}
    try:
        tracker.log_params(params)
    except Exception as exc:  # a resumed run whose settings changed keeps the first ones
        log.warning("MLflow kept the run's earlier params: %s", str(exc).splitlines()[0])
    manifest = data_dir / "manifest.json"
    if manifest.is_file():
        tracker._client().log_artifact(tracker.run_id, str(manifest), "dataset")
    write_run_file(out, tracker.uri, str(tracker.experiment_id), tracker.run_id)


def end_run(mlflow: ModuleType, exc: BaseException) -> None:
    """End the active run as failed (FAILED) or stopped (KILLED), with a tag saying why."""
    try:
        if type(exc).__name__ == "TrialPruned":
            mlflow.set_tag("imgclass.pruned", "true")
        else:
            mlflow.set_tag("imgclass.error", f"{type(exc).__name__}: {exc}"[:MAX_TAG_LENGTH])
    finally:
        mlflow.end_run(status=failure_status(exc))


@contextmanager
def track_training(
    cfg: TrainConfig,
    data_dir: Path,
    out: Path,
    *,
    uri: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    nested: bool = False,
    tags: dict[str, str] | None = None,
    enabled: bool = True,
    resume: bool = False,
) -> Iterator[Tracker]:
    """An MLflow run around a training run::

        with track_training(cfg, data, out, uri=args.tracking_uri) as tracker:
            outcome = train(data, out, cfg, callbacks=[tracker.callback])
            tracker.finish(outcome)

    The run ends FINISHED when the block completes, FAILED when it raises, KILLED on
    Ctrl-C or for an Optuna ``TrialPruned`` (tagged ``imgclass.pruned=true``). With
    ``enabled=False`` or on torchrun ranks other than 0 the tracker does nothing and
    mlflow is not imported. ``nested``: a child of the active run (trials of a search),
    in the parent's experiment unless ``experiment`` names another.
    ``resume``: continue the run named in RUNDIR/mlflow_run.json when it is in this store.
    """
    if not enabled or not is_main_process():
        yield Tracker()
        return
    data_dir, out = Path(data_dir), Path(out)
    tracker = start_run(cfg, data_dir, out, uri, experiment, run_name, nested, tags, resume)
    mlflow = import_mlflow()
    try:
        with terminate_as_exit():
            record_setup(tracker, cfg, data_dir, out)
            yield tracker
    except BaseException as exc:
        end_run(mlflow, exc)
        raise
    mlflow.end_run(status="FINISHED")


@contextmanager
def terminate_as_exit() -> Iterator[None]:
    """While tracking, SIGTERM (``kill``, a scheduler's stop) raises SystemExit(143), so
    the run ends KILLED instead of staying RUNNING forever. Only in the main thread and
    where nobody else handles SIGTERM; the previous handler comes back afterwards."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
