from __future__ import annotations

from fastapi import APIRouter, Response

from imgclass.serve.routes.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up. ``async``: answered on the event loop itself, never queued
    behind the sync routes in the framework's thread pool."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep, response: Response) -> dict[str, object]:
    """Ready to predict: at least one model is loaded."""
    if not state.ready:
        response.status_code = 503
    return {"ready": state.ready, "models": list(state.predictors)}


@router.get("/metrics", include_in_schema=False)
def metrics(state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")
