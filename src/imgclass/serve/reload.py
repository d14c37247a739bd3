"""Serving a registered model: ``NAME@champion``, swapped live when the alias moves.

A ``RegistryWatcher`` runs in a background thread of each server process. It loads
the champion when the server starts (``/readyz`` answers 503 until then), then checks
the alias every ``registry_poll_seconds`` (``POST /v1/admin/reload`` checks at once).
When the champion changed, the new version's bundle is fetched, verified, loaded and
warmed up completely first, and only then swapped in with one reference assignment
(``State.swap``): a request in flight keeps the predictor object it already took, so
none fails. A version that cannot be loaded (a broken bundle, an unreachable store) is
logged and the old one keeps serving; polling does not retry that same version until
the alias moves again or an admin asks for a reload.

With several worker processes each one polls on its own; the reload endpoint reaches
only the worker that answered it, and polling brings the others along.

mlflow is imported only here, and this module only when a server has ``--registry``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclass.errors import RegistryError
from imgclass.serve.predictor import Predictor

if TYPE_CHECKING:
    from imgclass.experiments.registry import ModelRegistry, ModelVersionInfo
    from imgclass.serve.app import State
    from imgclass.serve.settings import ServeSettings

log = logging.getLogger(__name__)
FIRST_LOAD_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)  # then every 10 s until it loads


class RegistryPredictor(Predictor):
    """A predictor for one registry version: named after the registered model, its
    version the registry's version number, so every answer says which one replied."""

    def __init__(self, path: str | Path, info: ModelVersionInfo, threads: int = 1) -> None:
        super().__init__(path, threads)
        self.name = info.name
        self.version = str(info.version)
        self.registry = {
            "name": info.name,
            "version": info.version,
            "aliases": list(info.aliases),
            "run_id": info.run_id,
            "source": info.source,
            "created": info.created,
            "test_accuracy": info.test_accuracy,
            "model_sha256": self.bundle.model_json.get("model_sha256", ""),
        }

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "registry": self.registry}


def warm_up(predictor: Predictor) -> None:
    """One prediction on a blank input, so the first real request pays no start-up cost."""
    bundle = predictor.bundle
    if bundle.input_kind == "sequence":
        bundle.predict_drawings([[np.array([[0, 0], [40, 40]], np.float32)]])
        return
    spec = bundle.preprocess["input"]
    size = tuple(spec.get("size", (28, 28)))
    channels = int(spec.get("channels", 1))
    shape = (1, *size) if channels == 1 else (1, *size, channels)
    bundle.predict_proba(np.zeros(shape, np.uint8))


@dataclass(frozen=True)
class ReloadResult:
    """What a check found: the version served now, the one before, whether it changed."""

    model: str
    version: int | None
    previous: int | None
    changed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "previous": self.previous,
            "changed": self.changed,
        }


class RegistryWatcher:
    """Keeps ``state`` serving ``settings.registry``'s champion."""

    def __init__(self, state: State, settings: ServeSettings) -> None:
        if not settings.registry:
            raise RegistryError("no registered model to watch (set --registry NAME)")
        self.state = state
        self.name = settings.registry
        self.uri = settings.tracking_uri
        self.poll_seconds = max(0.0, float(settings.registry_poll_seconds))
        self.cache = Path(settings.registry_cache)
        self.threads = settings.threads_per_model
        self.last_error: str | None = None
        self._registry: ModelRegistry | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: int | None = None

    @property
    def registry(self) -> ModelRegistry:
        if self._registry is None:
            from imgclass.experiments.registry import ModelRegistry

            self._registry = ModelRegistry(self.uri)
        return self._registry

    def serving(self) -> int | None:
        """The registry version served now (None before the first load)."""
        current = self.state.predictors.get(self.name)
        return int(current.version) if isinstance(current, RegistryPredictor) else None

    def check(self, force: bool = False) -> ReloadResult:
        """Compare the champion alias with what is served; load and swap on a change.

        force: retry a version that failed to load before. RegistryError when the
        registry cannot be read or the new champion cannot be loaded (the old version
        keeps serving either way).
        """
        with self._lock:
            info = self.registry.get(self.name, "champion")
            current = self.serving()
            if info.version == current or (info.version == self._failed and not force):
                return ReloadResult(self.name, current, current, False)
            try:
                predictor = self._load(info)
            except Exception as exc:
                self._failed = info.version
                self.last_error = f"cannot load {self.name} version {info.version}: {exc}"
                log.error("%s; still serving version %s", self.last_error, current)
                raise RegistryError(self.last_error) from None
            self.state.swap(predictor)
            self._failed, self.last_error = None, None
            log.warning("%s: now serving version %d (was %s)", self.name, info.version, current)
            return ReloadResult(self.name, info.version, current, True)

    def _load(self, info: ModelVersionInfo) -> RegistryPredictor:
        """Fetch (verified), load and warm up one version, off to the side."""
        started = time.perf_counter()
        path = self.registry.fetch_bundle(self.name, info.version, cache_dir=self.cache)
        predictor = RegistryPredictor(path, info, self.threads)
        warm_up(predictor)
        log.info(
            "%s version %d loaded in %.2f s", self.name, info.version, time.perf_counter() - started
        )
        return predictor

    # --- the background thread -------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"registry-watcher-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def load_now(self) -> bool:
        """One attempt at loading the champion (at start-up); False when it failed (the
        background thread retries)."""
        return self._try(force=True)

    def _run(self) -> None:
        """Load the champion (retrying until it works), then poll."""
        attempt = 0
        while not self._stop.is_set() and self.serving() is None:
            if attempt and self._try(force=True):
                break
            delay = FIRST_LOAD_RETRY_SECONDS[min(attempt, len(FIRST_LOAD_RETRY_SECONDS) - 1)]
            attempt += 1
            self._stop.wait(delay)
        if self.poll_seconds <= 0:
            return
        while not self._stop.wait(self.poll_seconds):
            self._try()

    def _try(self, force: bool = False) -> bool:
        """One check; errors are logged (the old version keeps serving), never raised."""
        try:
            self.check(force=force)
        except Exception as exc:  # a poll must never kill the thread
            message = str(exc)
            if message != self.last_error:
                log.error("registry check for %s failed: %s", self.name, message)
            self.last_error = message
            return False
        return True
