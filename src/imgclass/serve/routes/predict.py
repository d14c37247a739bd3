"""``POST /v1/predict``: a multipart image, or JSON with ``image_base64`` or ``strokes``."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, WithJsonSchema

from imgclass.serve.inputs import STROKES_SCHEMA, SafeJSONRoute, parse_json_body
from imgclass.serve.predictor import (
    BadInput,
    Prediction,
    decode_base64_image,
    decode_image,
    parse_strokes,
)
from imgclass.serve.routes.deps import StateDep

router = APIRouter(prefix="/v1", tags=["predict"], route_class=SafeJSONRoute)


class Guess(BaseModel):
    label: str
    probability: float


class PredictResponse(BaseModel):
    model: str
    version: str
    predictions: list[Guess]
    timing_ms: dict[str, float] = Field(default_factory=dict)
    input: list[list[int]] | None = Field(
        default=None, description="the model's input image, with include_input"
    )


class PredictJSON(BaseModel):
    """Exactly one of ``image_base64`` (a canvas export or any image, base64 or data URL)
    and ``strokes`` (Quick, Draw! form, any coordinate range, time optional)."""

    image_base64: str | None = None
    strokes: Annotated[list[Any], WithJsonSchema(STROKES_SCHEMA)] | None = None


async def read_payload(request: Request) -> tuple[str, Any]:
    """('image', bytes) or ('json', dict) from a multipart or JSON request."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise BadInput("multipart requests need the image in the field 'file'")
        return "image", await upload.read()
    if ctype.startswith("application/json"):
        body = parse_json_body(await request.body())
        if not isinstance(body, dict):
            raise BadInput("the JSON body must be an object")
        return "json", body
    raise BadInput("send multipart/form-data with a 'file', or application/json", 415)


def run_prediction(
    state: Any, model: str | None, kind: str, payload: Any, top_k: int, predictor: Any = None
) -> tuple[Any, Prediction]:
    """One prediction by ``predictor`` (default: the model now serving under ``model``)."""
    settings = state.settings
    predictor = predictor or state.predictor(model)
    t0 = time.perf_counter()
    if kind == "image":
        result = predictor.predict_image(decode_image(payload, settings.max_image_pixels), top_k)
        input_kind = "image"
    else:
        has_image, has_strokes = (
            payload.get("image_base64") is not None,
            payload.get("strokes") is not None,
        )
        if has_image == has_strokes:
            raise BadInput("send exactly one of 'image_base64' and 'strokes'")
        if has_image:
            if not isinstance(payload["image_base64"], str):
                raise BadInput("image_base64 must be a string")
            result = predictor.predict_image(
                decode_base64_image(payload["image_base64"], settings.max_image_pixels), top_k
            )
            input_kind = "image"
        else:
            drawing = parse_strokes(payload["strokes"], settings.max_strokes, settings.max_points)
            result = predictor.predict_strokes(drawing, top_k)
            input_kind = "strokes"
    result.timing_ms["total"] = (time.perf_counter() - t0) * 1e3
    state.metrics.predictions.labels(predictor.name, input_kind).inc()
    state.metrics.model_latency.labels(predictor.name).observe(
        result.timing_ms.get("model", 0) / 1e3
    )
    return predictor, result


@router.post(
    "/predict",
    response_model=PredictResponse,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": PredictJSON.model_json_schema()},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            },
            "required": True,
        }
    },
    responses={
        413: {"description": "too large"},
        415: {"description": "not an image"},
        422: {"description": "invalid input"},
    },
)
async def predict(
    request: Request,
    state: StateDep,
    top_k: int = Query(3, ge=1, le=100),
    model: str | None = Query(None),
    include_input: bool = Query(False, description="also return the model's input image"),
) -> PredictResponse:
    """Top-k guesses for one image or drawing."""
    top_k = min(top_k, state.settings.max_top_k)
    kind, payload = await read_payload(request)
    predictor, result = run_prediction(state, model, kind, payload, top_k)
    return PredictResponse(
        model=predictor.name,
        version=predictor.version,
        timing_ms=result.timing_ms,
        input=model_input(state, predictor, kind, payload) if include_input else None,
        predictions=[
            Guess(label=lab, probability=p)
            for lab, p in zip(result.labels, result.probabilities, strict=True)
        ],
    )


def model_input(state: Any, predictor: Any, kind: str, payload: Any) -> list[list[int]] | None:
    """The image the model saw (gray models only), to check rendering parity."""
    from imgclass.data.preprocess import apply_recipe, prepare_raw_image

    if predictor.bundle.input_kind != "image" or predictor.bundle.recipe["channels"] != 1:
        return None
    settings = state.settings
    if kind == "json" and payload.get("strokes") is not None:
        x = predictor.render(
            parse_strokes(payload["strokes"], settings.max_strokes, settings.max_points)
        )
    else:
        img = (
            decode_image(payload, settings.max_image_pixels)
            if kind == "image"
            else decode_base64_image(payload["image_base64"], settings.max_image_pixels)
        )
        x = apply_recipe(predictor.bundle.recipe, [prepare_raw_image(img, predictor.bundle.recipe)])
    return [[int(v) for v in row] for row in x[0]]


class BatchRequest(BaseModel):
    items: list[PredictJSON]


@router.post("/predict/batch")
async def predict_batch(
    body: BatchRequest,
    state: StateDep,
    top_k: int = Query(3, ge=1, le=100),
    model: str | None = Query(None),
) -> dict[str, Any]:
    """Several JSON items at once (at most ``max_batch``)."""
    if not body.items:
        raise BadInput("items is empty")
    if len(body.items) > state.settings.max_batch:
        raise BadInput(f"{len(body.items)} items; at most {state.settings.max_batch}", 413)
    top_k = min(top_k, state.settings.max_top_k)
    predictor = state.predictor(model)  # one version answers the whole batch, even mid-swap
    results = []
    for i, item in enumerate(body.items):
        try:
            _, r = run_prediction(state, model, "json", item.model_dump(), top_k, predictor)
        except BadInput as exc:
            raise exc.within(f"items[{i}]") from None
        results.append(
            {
                "predictions": [
                    {"label": lab, "probability": p}
                    for lab, p in zip(r.labels, r.probabilities, strict=True)
                ],
                "timing_ms": r.timing_ms,
            }
        )
    return {"model": predictor.name, "version": predictor.version, "results": results}
