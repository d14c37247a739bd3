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
    """Ready to serve: a model is loaded and the feedback database is the one opened
    (not deleted or replaced since); when not, 503 and the reason."""
    reasons = []
    if not state.ready:
        reasons.append("no model is loaded yet")
    problem = state.feedback.problem()
    if problem is not None:
        reasons.append(f"the feedback database is unavailable: {problem}")
    answer: dict[str, object] = {"ready": not reasons, "models": list(state.predictors)}
    if reasons:
        response.status_code = 503
        answer["reason"] = "; ".join(reasons)
    return answer


@router.get("/metrics", include_in_schema=False)
def metrics(state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")
