"""``POST /v1/feedback``: a person's label for an input; admin listing behind a token."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from imgclass.serve.predictor import BadInput, decode_base64_image, parse_strokes
from imgclass.serve.routes.deps import AdminDep, StateDep

router = APIRouter(prefix="/v1", tags=["feedback"])


class FeedbackIn(BaseModel):
    input: dict[str, Any]
    label: str = Field(min_length=1, max_length=100)
    model: str | None = None
    predicted: list[dict[str, Any]] | None = Field(default=None, max_length=20)
    client_id: str | None = Field(default=None, max_length=100)


@router.post("/feedback")
def post_feedback(body: FeedbackIn, state: StateDep) -> dict[str, Any]:
    """Store a confirmation or correction; the same input and label twice is a duplicate."""
    predictor = state.predictor(body.model)
    if body.label not in predictor.bundle.labels:
        raise BadInput(f"unknown label {body.label!r} for model {predictor.name}")
    settings = state.settings
    strokes, image_b64 = body.input.get("strokes"), body.input.get("image_base64")
    if (strokes is None) == (image_b64 is None):
        raise BadInput("input needs exactly one of 'image_base64' and 'strokes'")
    image: bytes | None = None
    if strokes is not None:
        parse_strokes(strokes, settings.max_strokes, settings.max_points)
        kind = "strokes"
    else:
        if not isinstance(image_b64, str):
            raise BadInput("image_base64 must be a string")
        decode_base64_image(image_b64, settings.max_image_pixels)  # refuse what is not an image
        image = base64.b64decode(
            image_b64.partition(",")[2] if image_b64.startswith("data:") else image_b64
        )
        kind = "image"
    fid, duplicate = state.feedback.add(
        label=body.label,
        input_kind=kind,
        input_json=strokes,
        image=image,
        model=predictor.name,
        version=predictor.version,
        predicted=body.predicted,
        client_id=body.client_id,
    )
    return {"id": fid, "duplicate": duplicate}


@router.get("/feedback")
def list_feedback(
    state: StateDep,
    _: AdminDep,
    status: str | None = Query(None, pattern="^(new|accepted|rejected)$"),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    """Submissions, newest first (admin)."""
    return {"items": state.feedback.list(status, limit)}
