"""The FastAPI application: one router per resource, the web page, metrics."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from imgclass import __version__
from imgclass.errors import FeedbackError
from imgclass.feedback.store import FeedbackStore
from imgclass.serve.explore import HeldOut
from imgclass.serve.inputs import place
from imgclass.serve.metrics import Metrics
from imgclass.serve.middleware import LimitsAndMetrics
from imgclass.serve.predictor import BadInput, Predictor
from imgclass.serve.security import SecurityHeaders
from imgclass.serve.settings import ServeSettings
from imgclass.serve.work import WorkPool

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")


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
        self.watcher: Any = None  # a RegistryWatcher when serving from the registry
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


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    state = State(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.registry:  # mlflow is imported only on this path
            from imgclass.serve.reload import RegistryWatcher

            state.watcher = RegistryWatcher(state, settings)
            # a worker takes requests only after its startup: load the champion first
            # (a failure is retried in the background while /readyz answers 503)
            await asyncio.to_thread(state.watcher.load_now)
            state.watcher.start()
        # What startup loaded lives as long as the process: keep it out of the cyclic
        # garbage collector, whose full passes over it (~0.1-0.2 s with the GIL held,
        # set off by a big batch's allocations) stalled every request on the loop.
        gc.collect()
        gc.freeze()
        yield
        state.work.shutdown()
        if state.watcher is not None:
            state.watcher.stop()
        state.feedback.close()

    app = FastAPI(
        title="imgclass",
        version=__version__,
        lifespan=lifespan,
        description="Image classification: predictions, models and feedback.",
    )
    app.state.imgclass = state
    _install_handlers(app, state)
    from imgclass.serve.routes import admin, feedback, health, models, predict, retrain

    for module in (health, models, predict, feedback, admin, retrain):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    docs = (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    app.add_middleware(SecurityHeaders, docs_paths=docs)  # outermost: on refusals too

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


def _install_handlers(app: FastAPI, state: State) -> None:
    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(FeedbackError)
    async def feedback_error(request: Request, exc: FeedbackError) -> JSONResponse:
        from imgclass.serve.routes.feedback_admin import as_http  # 404, 503 or 422

        answer = as_http(exc)
        return JSONResponse({"detail": str(answer)}, status_code=answer.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = place(first.get("loc", ()))
        return JSONResponse(
            {
                "detail": f"{where}: {first.get('msg', 'invalid request')}".strip(": "),
                "errors": [{"loc": e.get("loc"), "msg": e.get("msg")} for e in errors],
            },
            status_code=422,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    app.add_middleware(LimitsAndMetrics, state=state)
