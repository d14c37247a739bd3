"""``POST /v1/predict`` without FastAPI's routing, dependency injection and request objects.

The predict route is what the page and every client call, and a canvas prediction is a
millisecond of work: FastAPI's per-request machinery (matching the path against every
route, solving the dependencies, validating the query with pydantic, building the
request) cost a large share of it. This ASGI layer answers the common request itself
and hands everything else to the app unchanged:

- it sits inside ``LimitsAndMetrics`` and ``SecurityHeaders`` (body limits, metrics,
  security headers apply as on any route) and marks the scope with the FastAPI route, so
  metrics label it ``/v1/predict`` as before;
- it takes only queries it can read without doubt (``top_k`` as a whole number in
  FastAPI's bounds, ``include_input`` as true/false/1/0, ``model`` as plain text, each at
  most once); any other query, and every other method or path, goes to FastAPI, whose
  validation answers it as it always has;
- the body is read, checked and answered by the same code as the FastAPI route
  (``routes.predict.answer_predict``), errors as the app's handlers write them.

The FastAPI route stays the documented one (OpenAPI, /docs) and the fallback.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from imgclass.errors import BadInput

if TYPE_CHECKING:
    from imgclass.serve.state import State

log = logging.getLogger(__name__)

PATH = "/v1/predict"
TOP_K_RANGE = (1, 100)  # the route's Query(ge=1, le=100)
BOOLEANS = {b"true": True, b"false": False, b"1": True, b"0": False}


def simple_query(query: bytes) -> dict[str, Any] | None:
    """The predict route's query parameters (with its defaults) when the query string
    holds nothing that needs FastAPI's validation; None otherwise."""
    params: dict[str, Any] = {"top_k": 3, "model": None, "include_input": False}
    if not query:
        return params
    if b"%" in query or b"+" in query:  # percent-encoded: let the framework decode it
        return None
    seen = set()
    for part in query.split(b"&"):
        key, eq, value = part.partition(b"=")
        if not eq or not value or key in seen:
            return None
        seen.add(key)
        if key == b"top_k":
            if not value.isdigit() or len(value) > 3:
                return None
            top_k = int(value)
            if not TOP_K_RANGE[0] <= top_k <= TOP_K_RANGE[1]:
                return None
            params["top_k"] = top_k
        elif key == b"include_input" and value in BOOLEANS:
            params["include_input"] = BOOLEANS[value]
        elif key == b"model" and value.isascii():
            params["model"] = value.decode("ascii")
        else:
            return None
    return params


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when the client went away first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def header(scope: Scope, name: bytes) -> str:
    """The first value of a request header (latin-1, as Starlette decodes it), or ''."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


class PredictFastPath:
    """Answer ``POST /v1/predict`` (see the module's docstring); pass anything else on."""

    def __init__(self, app: ASGIApp, state: State, route: Any) -> None:
        self.app = app
        self.state = state
        self.route = route  # the FastAPI route, for the metrics' route label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = None
        if (
            scope["type"] == "http"
            and scope["path"] == PATH
            and scope["method"] == "POST"
            and not scope.get("root_path")
        ):
            params = simple_query(scope.get("query_string", b""))
        if params is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        response = await self._answer(scope, receive, params)
        if response is not None:
            await response(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, params: dict[str, Any]) -> Any:
        """The response, as the route and the app's error handlers would give it (None
        when the client disconnected before its body arrived)."""
        from imgclass.serve.routes.predict import answer_predict, payload_kind

        try:
            ctype = header(scope, b"content-type")
            kind = payload_kind(ctype)
            body = await read_body(receive)
            if body is None:
                return None
            return await answer_predict(self.state, kind, body, ctype, **params)
        except BadInput as exc:
            return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=exc.headers)
        except Exception:
            log.exception("unexpected error on %s", PATH)
            return JSONResponse({"detail": "internal error"}, status_code=500)


def predict_route(routes: list[Any]) -> Any:
    """The FastAPI route of ``POST /v1/predict`` among ``routes``."""
    for route in routes:
        if getattr(route, "path", None) == PATH and "POST" in getattr(route, "methods", ()):
            return route
    raise LookupError(f"no POST {PATH} route")  # pragma: no cover
