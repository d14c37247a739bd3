from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from imgclass.serve.routes.deps import StateDep
from imgclass.serve.schemas import ConfusionCell, Example, ModelInfo, ModelList, ModelReport

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=ModelList)
def list_models(state: StateDep) -> dict[str, Any]:
    """Each loaded model: version, family, classes, input kind, metrics; and what the web
    page needs to know of the server (admin actions on, when to hedge a guess)."""
    return {
        "models": [p.describe() for p in state.predictors.values()],
        "admin": bool(state.settings.admin_token),
        "hedge_below": state.settings.hedge_below,
    }


@router.get("/models/{name}", response_model=ModelInfo)
def get_model(name: str, state: StateDep) -> dict[str, Any]:
    return state.predictor(name).describe()


@router.get("/models/{name}/report", response_model=ModelReport)
def model_report(name: str, state: StateDep) -> dict[str, Any]:
    """Metrics, per-class scores and the confusion matrix on the model's own test split."""
    return state.held_out(name).report()


@router.get("/models/{name}/examples/random", response_model=Example)
def random_example(
    name: str, state: StateDep, seed: int | None = Query(None, ge=0, le=2**64 - 1)
) -> dict[str, Any]:
    """A random held-out example: the picture, its true label and the top-2 guesses."""
    return state.held_out(name).random_example(seed)


@router.get("/models/{name}/confusion", response_model=ConfusionCell)
def confusion_cell(
    name: str, state: StateDep, true: str, predicted: str, limit: int = Query(12, ge=1, le=100)
) -> dict[str, Any]:
    """The test examples of one confusion-matrix cell."""
    return {"examples": state.held_out(name).cell(true, predicted, limit)}
