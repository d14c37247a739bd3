"""What the routes share, in one object made at startup: the settings, the loaded
models, the feedback store, the metrics and the work pool.

Its own module so that ``app.py`` (which builds it) and ``routes/*`` (which read it)
both import it, instead of the routes importing the application module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imgclass.errors import BadInput
from imgclass.feedback.store import FeedbackStore
from imgclass.serve.explore import HeldOut
from imgclass.serve.metrics import Metrics
from imgclass.serve.predictor import Predictor
from imgclass.serve.settings import ServeSettings
from imgclass.serve.work import WorkPool

if TYPE_CHECKING:
    from imgclass.serve.reload import RegistryWatcher


class State:
    """What the routes share: settings, loaded models, the feedback store, metrics."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.predictors: dict[str, Predictor] = {}
        for path in settings.models:
            p = Predictor(path, settings.threads_per_model)
            p.warm_up()
            self.predictors[p.name] = p
        self.feedback = FeedbackStore.from_path_or_url(
            settings.feedback_url or settings.feedback_db
        )
        self.metrics = Metrics()
        self.work = WorkPool(settings.work_threads, settings.max_queue, settings.request_timeout)
        self.metrics.work_queue.set_function(lambda: self.work.admitted)
        # with a registry, ready once its champion is loaded (serve/reload.py)
        self.ready = bool(self.predictors) and not settings.registry
        self.watcher: RegistryWatcher | None = None  # when serving from the registry
        self._held_out: dict[str, HeldOut] = {}

    def held_out(self, name: str) -> HeldOut:
        predictor = self.predictor(name)
        cached = self._held_out.get(predictor.name)
        if cached is None or cached.predictor is not predictor:  # a new version: new cache
            cached = self._held_out[predictor.name] = HeldOut(predictor)
        return cached

    def swap(self, predictor: Predictor) -> None:
        """Serve ``predictor`` under its name (first, so it is the default) from now on.
        One reference assignment: a request that already took the old one finishes on it."""
        others = {k: v for k, v in self.predictors.items() if k != predictor.name}
        self.predictors = {predictor.name: predictor, **others}
        self.ready = True

    def predictor(self, name: str | None) -> Predictor:
        if not self.predictors:
            raise BadInput("no model is loaded", 503)
        if name is None:
            return next(iter(self.predictors.values()))
        if name not in self.predictors:
            raise BadInput(f"unknown model {name!r}; loaded: {', '.join(self.predictors)}", 404)
        return self.predictors[name]
