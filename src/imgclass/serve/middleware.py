"""Body-size limits and request metrics as a plain ASGI middleware.

Starlette's ``@app.middleware("http")`` wraps every request and response in extra tasks and
streams; measured on the canvas benchmark it cost more than the model. This one only
reads the headers and watches the response status.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgclass.serve.metrics import route_label

if TYPE_CHECKING:
    from imgclass.serve.state import State


class LimitsAndMetrics:
    """Refuse bodies over ``max_body_bytes`` (413) and chunked uploads (411) before any
    route reads them; count every request in ``state.metrics`` by route and status."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        status = 500  # what the server error handler answers if the app raises

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is None:
                await self.app(scope, receive, watch)
            else:
                await _answer(watch, *refusal)
        finally:
            route = route_label(scope, root_path)
            self.state.metrics.observe(
                scope["method"], route, status, time.perf_counter() - started
            )

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(status, detail) when the request must not reach a route."""
        limit = self.state.settings.max_body_bytes
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return 413, f"request body larger than {limit} bytes"
        chunked = headers.get(b"transfer-encoding", b"").lower() == b"chunked"
        if length is None and scope["method"] in ("POST", "PUT") and chunked:
            return 411, "send a Content-Length (chunked bodies are refused)"
        return None


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
