"""The FastAPI application: one router per resource, the web page, metrics."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from imgclass import __version__
from imgclass.errors import BadInput, FeedbackError
from imgclass.serve.docs import DOCS, OAUTH2_REDIRECT, REDOC, install_docs
from imgclass.serve.fastpath import PredictFastPath, predict_route
from imgclass.serve.inputs import place
from imgclass.serve.middleware import LimitsAndMetrics
from imgclass.serve.security import SecurityHeaders
from imgclass.serve.settings import ServeSettings
from imgclass.serve.state import State

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    state = State(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
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
        docs_url=None,  # served from the package's own copies by install_docs (no CDN)
        redoc_url=None,
    )
    app.state.imgclass = state
    from imgclass.serve.routes import (
        admin,
        browser,
        feedback,
        game,
        health,
        models,
        predict,
        retrain,
    )

    for module in (health, models, browser, predict, feedback, game, admin, retrain):
        app.include_router(module.router)
    # innermost of the middlewares: limits, metrics and headers apply to it as to any route
    app.add_middleware(PredictFastPath, state=state, route=predict_route(predict.router.routes))
    _install_handlers(app, state)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    install_docs(app)
    docs = (DOCS, REDOC, OAUTH2_REDIRECT)
    app.add_middleware(SecurityHeaders, docs_paths=docs)  # outermost: on refusals too

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:  # browsers ask for it whatever the page links
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    return app


def _install_handlers(app: FastAPI, state: State) -> None:
    @app.exception_handler(BadInput)
    async def bad_input(_request: Request, exc: BadInput) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(FeedbackError)
    async def feedback_error(_request: Request, exc: FeedbackError) -> JSONResponse:
        from imgclass.serve.routes.feedback_admin import as_http  # 404, 503 or 422

        answer = as_http(exc)
        return JSONResponse({"detail": str(answer)}, status_code=answer.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
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
    async def unexpected(request: Request, _exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    app.add_middleware(LimitsAndMetrics, state=state)
