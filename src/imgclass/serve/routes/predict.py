"""``POST /v1/predict``: a multipart image, or JSON with ``image_base64`` or ``strokes``."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from imgclass.serve.inputs import SafeJSONRoute, parse_json_body
from imgclass.serve.multipart import form_field
from imgclass.serve.predictor import (
    BadInput,
    Prediction,
    Predictor,
    decode_base64_image,
    decode_pixels,
    parse_strokes,
)
from imgclass.serve.routes.deps import StateDep
from imgclass.serve.schemas import (
    PREDICT_ERRORS,
    PREDICT_EXAMPLES,
    BatchRequest,
    BatchResponse,
    PredictJSON,
    PredictResponse,
)
from imgclass.serve.state import State
from imgclass.serve.work import Deadline

router = APIRouter(prefix="/v1", tags=["predict"], route_class=SafeJSONRoute)


def payload_kind(content_type: str) -> str:
    """'multipart' or 'json' for a request's Content-Type; 415 for anything else."""
    if content_type.startswith("multipart/form-data"):
        return "multipart"
    if content_type.startswith("application/json"):
        return "json"
    raise BadInput("send multipart/form-data with a 'file', or application/json", 415)


def parse_payload(kind: str, body: bytes, content_type: str) -> tuple[str, Any]:
    """('image', bytes) or ('json', dict) from a body of ``payload_kind`` ``kind``."""
    if kind == "multipart":
        image = form_field(body, content_type, "file")
        if image is None:
            raise BadInput("multipart requests need the image in the field 'file'")
        return "image", image
    payload = parse_json_body(body)
    if not isinstance(payload, dict):
        raise BadInput("the JSON body must be an object")
    return "json", payload


def run_prediction(
    state: State,
    model: str | None,
    kind: str,
    payload: Any,
    top_k: int,
    predictor: Predictor | None = None,
) -> tuple[Predictor, Prediction]:
    """One prediction by ``predictor`` (default: the model now serving under ``model``)."""
    settings = state.settings
    predictor = predictor or state.predictor(model)
    t0 = time.perf_counter()
    if kind == "image":
        image = decode_pixels(payload, settings.max_image_pixels, predictor.decode_side)
        result = predictor.predict_image(image, top_k)
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
            image = decode_base64_image(
                payload["image_base64"], settings.max_image_pixels, predictor.decode_side
            )
            result = predictor.predict_image(image, top_k)
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
                "application/json": {
                    "schema": PredictJSON.model_json_schema(),
                    "examples": PREDICT_EXAMPLES,
                },
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
    responses=PREDICT_ERRORS,
)
async def predict(
    request: Request,
    state: StateDep,
    top_k: int = Query(3, ge=1, le=100),
    model: str | None = Query(None),
    include_input: bool = Query(False, description="also return the model's input image"),
) -> Response:
    """Top-k guesses for one image or drawing."""
    ctype = request.headers.get("content-type", "")
    kind = payload_kind(ctype)
    return await answer_predict(
        state, kind, await request.body(), ctype, top_k, model, include_input
    )


async def answer_predict(
    state: State,
    raw_kind: str,
    body: bytes,
    ctype: str,
    top_k: int,
    model: str | None,
    include_input: bool,
) -> Response:
    """The answer to ``POST /v1/predict``, once its query is valid and its body read
    (``raw_kind`` from ``payload_kind``): the route above and the fast path
    (``serve/fastpath.py``) both end here. The event loop only moves bytes: parsing,
    decoding and the model run on the work pool."""
    top_k = min(top_k, state.settings.max_top_k)
    predictor = state.predictor(model)

    def work(deadline: Deadline) -> Response:
        kind, payload = parse_payload(raw_kind, body, ctype)
        deadline.check()
        _, result = run_prediction(state, model, kind, payload, top_k, predictor)
        answer = {
            "model": predictor.name,
            "version": predictor.version,
            "predictions": guesses(result),
            "timing_ms": result.timing_ms,
            "input": model_input(predictor, result) if include_input else None,
        }
        return json_response(answer)

    return await state.work.run(work)


def guesses(result: Prediction) -> list[dict[str, Any]]:
    return [
        {"label": lab, "probability": p}
        for lab, p in zip(result.labels, result.probabilities, strict=True)
    ]


def json_response(content: Any) -> Response:
    """A JSON answer serialised on the worker thread (the response model stays the
    documented schema; validating our own dicts again would cost more than the model)."""
    return Response(json.dumps(content, separators=(",", ":")), media_type="application/json")


def model_input(predictor: Predictor, result: Prediction) -> list[list[int]] | None:
    """The image the model saw (gray models only), to check rendering parity."""
    if result.model_input is None or predictor.bundle.recipe["channels"] != 1:
        return None
    return [[int(v) for v in row] for row in result.model_input]


def parse_batch(body: bytes) -> BatchRequest:
    """The batch body, parsed and validated on a worker thread (a 5 MB body is a tenth
    of a second of JSON parsing); errors answer 422 exactly as FastAPI's own would."""
    try:
        return BatchRequest.model_validate(parse_json_body(body))
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` written in place (for ``openapi_extra``)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        return [resolve(v) for v in node] if isinstance(node, list) else node

    return resolve(schema)  # type: ignore[no-any-return]


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    responses=PREDICT_ERRORS,
    openapi_extra={
        "requestBody": {
            "content": {"application/json": {"schema": inline_schema(BatchRequest)}},
            "required": True,
        }
    },
)
async def predict_batch(
    request: Request,
    state: StateDep,
    top_k: int = Query(3, ge=1, le=100),
    model: str | None = Query(None),
) -> Response:
    """Several JSON items at once (at most ``max_batch``)."""
    ctype = request.headers.get("content-type", "")
    if ctype and not ctype.startswith("application/json"):  # none: JSON, as FastAPI takes it
        raise BadInput("send the batch as application/json", 415)
    raw = await request.body()
    top_k = min(top_k, state.settings.max_top_k)
    predictor = state.predictor(model)  # one version answers the whole batch, even mid-swap

    def work(deadline: Deadline) -> Response:
        body = parse_batch(raw)
        if not body.items:
            raise BadInput("items is empty")
        if len(body.items) > state.settings.max_batch:
            raise BadInput(f"{len(body.items)} items; at most {state.settings.max_batch}", 413)
        results = []
        for i, item in enumerate(body.items):
            deadline.check()  # a batch past its deadline stops between items
            try:
                _, r = run_prediction(state, model, "json", item.model_dump(), top_k, predictor)
            except BadInput as exc:
                raise exc.within(f"items[{i}]") from None
            results.append({"predictions": guesses(r), "timing_ms": r.timing_ms})
        return json_response(
            {"model": predictor.name, "version": predictor.version, "results": results}
        )

    return await state.work.run(work)
