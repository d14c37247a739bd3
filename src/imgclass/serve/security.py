"""Security headers on every response, as a plain ASGI middleware.

The page runs only its own script and style sheet (no inline script, style attribute or
event handler: app.js sets styles through the CSSOM) and compiles only WebAssembly it
loaded from its own origin (``'wasm-unsafe-eval'``: onnxruntime-web runs the model in the
page; it allows no JavaScript eval), draws images from data: and blob:
URLs and talks only to its own origin, so its Content-Security-Policy allows exactly
that; no site may frame it (clickjacking on the review tab), browsers must not guess
content types, and no Referer leaves the page.

``/docs``, ``/docs/oauth2-redirect`` and ``/redoc`` are FastAPI's pages, which load Swagger
UI and ReDoc from cdn.jsdelivr.net and start them with an inline script: they get a
policy that lets them work as they are (the CDN, inline script and style, Google fonts)
until they are served from the package itself. Everything else gets the strict one.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_POLICY = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'self'; form-action 'self'"
)
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "font-src 'self' https://fonts.gstatic.com; worker-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """Add the CSP, ``X-Content-Type-Options``, ``X-Frame-Options`` and ``Referrer-Policy``
    to every HTTP response that does not set them itself. ``docs_paths`` get DOCS_POLICY."""

    def __init__(self, app: ASGIApp, docs_paths: Iterable[str | None] = ()) -> None:
        self.app = app
        self.docs_paths = frozenset(p for p in docs_paths if p)
        self.page = [*COMMON, (b"content-security-policy", PAGE_POLICY.encode())]
        self.docs = [*COMMON, (b"content-security-policy", DOCS_POLICY.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.docs if scope["path"] in self.docs_paths else self.page

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in extra if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
