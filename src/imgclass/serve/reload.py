"""Serving a registered model: ``NAME@champion``, swapped live when the alias moves.

A ``RegistryWatcher`` runs in a background thread of each server process. A worker
loads the champion during its start-up, before it takes requests (from the copy that
``imgclass serve`` fetched into the cache, so MLflow's import does not delay it); when
that fails it starts anyway and retries in the background while ``/readyz`` answers
503. Then it checks the alias every ``registry_poll_seconds`` (``POST
/v1/admin/reload`` checks at once).
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

from imgclass.errors import RegistryError
from imgclass.serve.predictor import Predictor

if TYPE_CHECKING:
    from imgclass.experiments.model_registry import ModelRegistry, ModelVersionInfo
    from imgclass.serve.settings import ServeSettings
    from imgclass.serve.state import State

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
        self._checked = False  # the registry confirmed what is served at least once
        self.start_info = start_info(settings.registry_start)

    @property
    def registry(self) -> ModelRegistry:
        if self._registry is None:
            from imgclass.experiments.model_registry import ModelRegistry

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
                self._checked = True
                return ReloadResult(self.name, current, current, False)
            try:
                predictor = self._load(info)
            except Exception as exc:
                self._failed = info.version
                self.last_error = f"cannot load {self.name} version {info.version}: {exc}"
                log.error("%s; still serving version %s", self.last_error, current)
                raise RegistryError(self.last_error) from None
            self.state.swap(predictor)
            self._checked = True
            self._failed, self.last_error = None, None
            log.warning("%s: now serving version %d (was %s)", self.name, info.version, current)
            return ReloadResult(self.name, info.version, current, True)

    def _load(self, info: ModelVersionInfo) -> RegistryPredictor:
        """Fetch (verified), load and warm up one version, off to the side."""
        started = time.perf_counter()
        path = self.registry.fetch_bundle(self.name, info.version, cache_dir=self.cache)
        predictor = RegistryPredictor(path, info, self.threads)
        predictor.warm_up()
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
        """At start-up: the champion that ``imgclass serve`` fetched, straight from the
        cache (no MLflow import before the worker is ready; the background thread then
        confirms it is still the champion), else one check of the registry. False when
        nothing could be loaded (the background thread retries)."""
        if self.start_info is not None and self._load_cached(self.start_info):
            return True
        return self._try(force=True)

    def _load_cached(self, info: ModelVersionInfo) -> bool:
        from imgclass.experiments.model_registry import bundle_digest

        path = self.cache / info.name / str(info.version)
        expected = info.tags.get("imgclass.bundle_sha256")
        try:
            if info.name != self.name or not expected or bundle_digest(path) != expected:
                return False
            predictor = RegistryPredictor(path, info, self.threads)
            predictor.warm_up()
        except Exception as exc:  # then the registry decides
            log.warning("the cached %s version %d is not usable: %s", info.name, info.version, exc)
            return False
        with self._lock:
            if self.serving() is None:
                self.state.swap(predictor)
        return True

    def _run(self) -> None:
        """Make sure the registry confirmed the champion (retrying until it answers),
        then poll."""
        attempt = 0 if self.serving() is not None else 1  # from the cache: confirm at once
        while not self._checked and not self._stop.is_set():
            if attempt:
                delay = FIRST_LOAD_RETRY_SECONDS[min(attempt, len(FIRST_LOAD_RETRY_SECONDS)) - 1]
                if self._stop.wait(delay):
                    return
            self._try(force=True)
            attempt += 1
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


def start_info(raw: str | None) -> ModelVersionInfo | None:
    """The ModelVersionInfo in ``settings.registry_start`` (None when absent or unreadable)."""
    if not raw:
        return None
    import json

    from imgclass.experiments.model_registry import ModelVersionInfo

    try:
        return ModelVersionInfo.from_dict(json.loads(raw))
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("ignoring an unreadable registry_start setting: %s", exc)
        return None
