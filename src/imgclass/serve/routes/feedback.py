"""``POST /v1/feedback``: a person's label for an input (the page's "Right!" and "Not
right?"). Review, export and deletion are admin endpoints, in ``feedback_admin.py``.

A submission is checked completely before anything is written (the input as strictly
as ``/v1/predict`` checks it, the label against the model's classes), then stored in
one transaction: a refused submission leaves nothing behind.
"""

from __future__ import annotations

import base64
import binascii
import re

from fastapi import APIRouter

from imgclass.errors import FeedbackError
from imgclass.feedback.content import label_problem, normalise_label
from imgclass.feedback.store import FeedbackStore
from imgclass.serve.inputs import SafeJSONRoute, parse_strokes
from imgclass.serve.predictor import BadInput, Predictor, decode_image
from imgclass.serve.routes import feedback_admin
from imgclass.serve.routes.deps import StateDep
from imgclass.serve.routes.feedback_admin import as_http
from imgclass.serve.schemas import FeedbackIn, FeedbackInput, FeedbackOut
from imgclass.serve.settings import ServeSettings

router = APIRouter(prefix="/v1", tags=["feedback"], route_class=SafeJSONRoute)

NEW_LABEL = re.compile(r"[\w \-']{1,64}")


@router.post("/feedback", response_model=FeedbackOut)
def post_feedback(body: FeedbackIn, state: StateDep) -> FeedbackOut:
    """Store a confirmation or a correction; the same input and label twice is reported as
    a duplicate (with the first one's id) and stored once. With a ``drawing_id``, a second
    answer for the same drawing replaces the first (same id), never adds a row."""
    predictor = state.predictor(body.model)
    settings = state.settings
    label = check_label(body.label, predictor, settings)
    kind, image = read_input(body.input, settings)
    try:
        check_new_label_caps(label, predictor, state.feedback, settings, body.client_id)
        fid, duplicate = state.feedback.add(
            label=label,
            input_kind=kind,
            strokes=body.input.strokes,
            image=image,
            model=predictor.name,
            version=predictor.version,
            predicted=[g.model_dump() for g in body.predicted] if body.predicted else None,
            client_id=body.client_id,
            source=body.source,
            drawing_id=body.drawing_id,
        )
    except FeedbackError as exc:
        raise as_http(exc) from None
    return FeedbackOut(id=fid, duplicate=duplicate)


def check_label(label: str, predictor: Predictor, settings: ServeSettings) -> str:
    """The label to store (NFKC-normalised unless the model knows it as given): 422 unless
    the model knows it, or new labels are allowed and it is visible, sane text."""
    labels = predictor.bundle.labels
    if label in labels:
        return label
    normal = normalise_label(label)
    if normal in labels:  # "３" is "3"
        return normal
    if not settings.feedback_allow_new_labels:
        shown = ", ".join(labels[:20]) + (" ..." if len(labels) > 20 else "")
        raise BadInput(f"unknown label {label!r} for model {predictor.name} (it knows {shown})")
    problem = label_problem(label) or label_problem(normal)  # naming what was sent
    if problem is not None:
        raise BadInput(f"new label {label!r}: {problem}")
    if not NEW_LABEL.fullmatch(normal) or normal != normal.strip():
        raise BadInput(
            f"new label {label!r}: use 1-64 letters, digits, spaces, '-', '_' or \"'\", "
            "without spaces at either end"
        )
    return normal


def check_new_label_caps(
    label: str,
    predictor: Predictor,
    store: FeedbackStore,
    settings: ServeSettings,
    client_id: str | None,
) -> None:
    """429 when ``label`` is new to the model and would be one new label too many: for the
    server (``feedback_max_new_labels``) or for this client id (``..._per_client``).
    Rejected submissions do not count, so reviewing junk frees the quota."""
    known = set(predictor.bundle.labels)
    if label in known:
        return
    caps: list[tuple[str | None, int, str]] = [
        (None, settings.feedback_max_new_labels, "this server")
    ]
    if client_id is not None:
        caps.append((client_id, settings.feedback_max_new_labels_per_client, "this client"))
    for client, cap, who in caps:
        used = store.labels_in_use(model=predictor.name, client_id=client)
        if label not in used and len(used - known) >= cap:
            raise BadInput(
                f"new label {label!r} refused: {who} already has {cap} new labels for model "
                f"{predictor.name} waiting (the limit); use one of those or ask a reviewer "
                "to reject the wrong ones",
                429,
            )


def read_input(given: FeedbackInput, settings: ServeSettings) -> tuple[str, bytes | None]:
    """(input kind, image bytes or None), after checking the input like /v1/predict does."""
    if given.strokes is None and given.image_base64 is None:
        raise BadInput("input needs 'strokes' or 'image_base64' (the body sent to /v1/predict)")
    if given.strokes is not None:
        parse_strokes(given.strokes, settings.max_strokes, settings.max_points, "input.strokes")
    image = None
    if given.image_base64 is not None:
        image = image_bytes(given.image_base64, settings.max_feedback_input_bytes)
        decode_image(image, settings.max_image_pixels)  # refuse what is not an image
    return ("strokes" if given.strokes is not None else "image"), image


def image_bytes(text: str, limit: int) -> bytes:
    """The bytes of a base64 image or data URL: 413 over ``limit``, 422 if not base64."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) * 3 // 4 > limit + 3:
        raise BadInput(f"the image is larger than {limit} bytes", 413)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("image_base64 is not valid base64") from None
    if len(data) > limit:
        raise BadInput(f"the image is larger than {limit} bytes", 413)
    return data


router.include_router(feedback_admin.router)
