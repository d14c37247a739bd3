"""What the server accepts from people, checked the same way on every route.

- ``parse_json_body``: a request body as JSON, through ``imgclass.safejson`` (bounded
  nesting, integers of thousands of digits, NaN: each a 422 that says so). Routes that
  read their body themselves call it; routes with a pydantic body model use
  ``SafeJSONRoute``, which parses with it before FastAPI's own parser sees the body.
- ``parse_strokes``: the one strict check of Quick, Draw! strokes
  (``imgclass.data.strokes``) for ``/v1/predict``, its batch items and ``/v1/feedback``;
  ``STROKES_SCHEMA`` is the same rule for the OpenAPI document.
- ``BadInput``: the error that becomes a 4xx; ``where`` names the place in the request.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import numpy as np
from fastapi import Request, Response
from fastapi.routing import APIRoute

from imgclass.data.strokes import StrokesError, check_strokes
from imgclass.errors import BadInput
from imgclass.safejson import JSONRefused, loads

MAX_BODY_DEPTH = 32  # arrays and objects; the deepest request we take, a batch, is 6
COORDINATE_LIMIT = 1e6  # |x| and |y|: any canvas, with room; beyond it is not a drawing

STROKES_SCHEMA: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "description": "Quick, Draw! strokes, each [[x...], [y...]] or [[x...], [y...], [t...]] "
    "(t in ms): lists of equal length holding numbers only; every stroke of one form",
    "items": {
        "type": "array",
        "minItems": 2,
        "maxItems": 3,
        "items": {"type": "array", "minItems": 1, "items": {"type": "number"}},
    },
}


def parse_json_body(data: bytes) -> Any:
    """A request body -> its JSON value; BadInput (422) naming what is wrong."""
    try:
        return loads(data, max_depth=MAX_BODY_DEPTH)
    except JSONRefused as exc:
        raise BadInput(str(exc), where="body") from None


def parse_strokes(
    strokes: Any, max_strokes: int, max_points: int, name: str = "strokes"
) -> list[np.ndarray]:
    """Strokes from a request -> float32 (n, 2|3) arrays; BadInput naming the place of
    the fault (413 past ``max_strokes`` or ``max_points``, else 422)."""
    try:
        return check_strokes(
            strokes,
            name=name,
            max_strokes=max_strokes,
            max_points=max_points,
            limit=COORDINATE_LIMIT,
        )
    except StrokesError as exc:
        raise BadInput(exc.reason, 413 if exc.too_large else 422, exc.where) from None


def place(loc: Sequence[Any]) -> str:
    """A pydantic error location as people write it: ``("body", "items", 3, "strokes")``
    -> ``items[3].strokes``; ``("query", "seed")`` -> ``query.seed``."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _CheckedJSONRequest(Request):
    """A request whose ``json()`` is ``parse_json_body`` (parsed once, then cached)."""

    _checked: Any

    async def json(self) -> Any:
        if not hasattr(self, "_checked"):
            self._checked = parse_json_body(await self.body())
        return self._checked


class SafeJSONRoute(APIRoute):
    """A route whose JSON body is parsed by ``parse_json_body`` before FastAPI reads it.

    FastAPI's parser answers 400 "There was an error parsing the body" for nesting past
    the recursion limit or a 5,000-digit integer, and lets a 400-digit integer through
    to code that makes a float of it. Parsing first turns each into a 422 saying what is
    wrong, raised where the app's BadInput handler answers it.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def parse_first(request: Request) -> Response:
            request = _CheckedJSONRequest(request.scope, request.receive)
            is_json = _is_json(request.headers.get("content-type"))
            if takes_body and is_json and await request.body():  # empty: FastAPI's "no body"
                await request.json()
            return await handler(request)

        return parse_first


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI would parse a body of this type as JSON."""
    mime = (content_type or "").partition(";")[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )
