"""Admin endpoints for feedback (``Authorization: Bearer <IMGCLASS_ADMIN_TOKEN>``; off
when no token is set): list and filter, look at one submission and a picture of it,
accept or reject (one or many), delete, and export as an ndjson stream.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import StreamingResponse

from imgclass.errors import FeedbackError
from imgclass.feedback.store import (
    FeedbackConflict,
    FeedbackNotFound,
    FeedbackStore,
    FeedbackUnavailable,
)
from imgclass.serve.inputs import SafeJSONRoute
from imgclass.serve.predictor import BadInput
from imgclass.serve.routes.deps import AdminDep, StateDep
from imgclass.serve.schemas import (
    MAX_ID,
    Changed,
    Deleted,
    FeedbackStats,
    Ids,
    Review,
    Source,
    Status,
    StatusSet,
    SubmissionDetail,
    SubmissionList,
)

router = APIRouter(tags=["feedback admin"], route_class=SafeJSONRoute)

# A submission's id in a path, and in a list: anything larger is a 422, not a 500
IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="the submission's id")]
THUMBNAIL = 128  # pixels, the longer side of a picture in the review grid


def as_http(exc: FeedbackError) -> BadInput:
    """The response for a store error: 404 unknown id, 409 another client's drawing id,
    503 database unavailable, else 422."""
    if isinstance(exc, FeedbackNotFound):
        return BadInput(str(exc), 404)
    if isinstance(exc, FeedbackConflict):
        return BadInput(str(exc), 409)
    if isinstance(exc, FeedbackUnavailable):
        return BadInput(str(exc), 503)
    return BadInput(str(exc))


@router.get("/feedback", response_model=SubmissionList)
def list_feedback(
    state: StateDep,
    _: AdminDep,
    status: Status | None = None,
    label: str | None = Query(None, max_length=100),
    model: str | None = Query(None, max_length=200),
    source: Source | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=10**9),
) -> dict[str, Any]:
    """Submissions, newest first, and how many match the filters in all."""
    store: FeedbackStore = state.feedback
    items = store.list(
        status=status, label=label, model=model, source=source, limit=limit, offset=offset
    )
    total = store.count(status, label=label, model=model, source=source)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/feedback/stats", response_model=FeedbackStats)
def feedback_stats(state: StateDep, _: AdminDep) -> dict[str, Any]:
    """Submissions per status, and per label and status."""
    return state.feedback.counts()


@router.get("/feedback/export", response_class=StreamingResponse)
def export_feedback(state: StateDep, _: AdminDep, status: Status = "accepted") -> Response:
    """One JSON object a line: id, label, input_kind, strokes or image_base64, content_hash,
    created, source (``imgclass feedback export`` turns these into a prepared dataset)."""
    store: FeedbackStore = state.feedback
    problem = store.problem()  # the stream's status is sent before its first row is read
    if problem is not None:
        raise BadInput(f"the feedback database is unavailable: {problem}", 503)

    def lines() -> Iterator[bytes]:
        for item in store.iter_inputs(status=status):
            row: dict[str, Any] = {
                "id": item.id,
                "label": item.label,
                "input_kind": item.input_kind,
                "content_hash": item.content_hash,
                "created": item.created,
                "source": item.source,
            }
            if item.strokes is not None:
                row["strokes"] = item.strokes
            if item.image is not None:
                row["image_base64"] = base64.b64encode(item.image).decode()
            yield json.dumps(row).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post("/feedback/review", response_model=Changed)
def review(body: Review, state: StateDep, _: AdminDep) -> Changed:
    """Give many submissions one status (``accepted``, ``rejected`` or back to ``new``)."""
    return Changed(changed=state.feedback.set_status(body.ids, body.status))


@router.post("/feedback/delete", response_model=Deleted)
def delete_many(body: Ids, state: StateDep, _: AdminDep) -> Deleted:
    """Delete many submissions; answers how many existed."""
    return Deleted(deleted=state.feedback.delete(body.ids))


@router.get("/feedback/{id}", response_model=SubmissionDetail)
def get_feedback(id: IdPath, state: StateDep, _: AdminDep) -> dict[str, Any]:
    """One submission with its input: the strokes, or the image as base64."""
    item = _get(state.feedback, id, with_input=True)
    image = item.pop("image")
    item["image_base64"] = base64.b64encode(image).decode() if image else None
    return item


@router.get("/feedback/{id}/image.png", response_class=Response)
def feedback_picture(id: IdPath, state: StateDep, _: AdminDep) -> Response:
    """A small PNG of the input for the review grid: the strokes drawn black on white,
    or the image scaled down."""
    item = _get(state.feedback, id, with_input=True)
    return Response(
        picture(item["strokes"], item["image"]),
        media_type="image/png",
        headers={"Cache-Control": "private, max-age=3600"},
    )


@router.post("/feedback/{id}/accept", response_model=StatusSet)
def accept(id: IdPath, state: StateDep, _: AdminDep) -> dict[str, Any]:
    return _set_one(state.feedback, id, "accepted")


@router.post("/feedback/{id}/reject", response_model=StatusSet)
def reject(id: IdPath, state: StateDep, _: AdminDep) -> dict[str, Any]:
    return _set_one(state.feedback, id, "rejected")


@router.delete("/feedback/{id}", response_model=Deleted)
def delete_one(id: IdPath, state: StateDep, _: AdminDep) -> Deleted:
    if not state.feedback.delete([id]):
        raise BadInput(f"no feedback with id {id}", 404)
    return Deleted(deleted=1)


def _get(store: FeedbackStore, id: int, *, with_input: bool) -> dict[str, Any]:
    try:
        return store.get(id, with_input=with_input)
    except FeedbackError as exc:
        raise as_http(exc) from None


def _set_one(store: FeedbackStore, id: int, status: str) -> dict[str, Any]:
    if not store.set_status([id], status):
        raise BadInput(f"no feedback with id {id}", 404)
    return {"id": id, "status": status}


def picture(strokes: list[Any] | None, image: bytes | None) -> bytes:
    """PNG bytes showing a submission's input (strokes win when both exist)."""
    import numpy as np
    from PIL import Image

    if strokes is not None:
        from imgclass.data.render import render_strokes, simplify_raw

        drawing = [np.asarray(s, dtype=np.float32).T for s in strokes]
        img = Image.fromarray(255 - render_strokes(simplify_raw(drawing), size=THUMBNAIL))
    else:
        from imgclass.serve.predictor import decode_image

        img = decode_image(image or b"", 25_000_000).convert("RGB")
        img.thumbnail((THUMBNAIL, THUMBNAIL))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
