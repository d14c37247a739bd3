from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from imgclass.serve.routes.deps import StateDep

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models")
def list_models(state: StateDep) -> dict[str, Any]:
    """Each loaded model: version, family, classes, input kind, metrics."""
    return {"models": [p.describe() for p in state.predictors.values()]}


@router.get("/models/{name}")
def get_model(name: str, state: StateDep) -> dict[str, Any]:
    return state.predictor(name).describe()
