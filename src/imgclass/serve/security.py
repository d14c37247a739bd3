"""Security headers on every response, as a plain ASGI middleware.

The page runs only its own script and style sheet (no inline script, style attribute or
event handler: app.js sets styles through the CSSOM) and compiles only WebAssembly it
loaded from its own origin (``'wasm-unsafe-eval'``: onnxruntime-web runs the model in the
page; it allows no JavaScript eval), draws images from data: and blob:
URLs and talks only to its own origin, so its Content-Security-Policy allows exactly
that; no site may frame it (clickjacking on the review tab), browsers must not guess
content types, and no Referer leaves the page.

``/docs``, ``/docs/oauth2-redirect`` and ``/redoc`` are Swagger UI and ReDoc, served from
the package's own copies (serve/docs.py): they get ``docs_policy``, which allows the one
inline start-up script of each page by its hash and inline styles (both libraries style
their elements from script), and still nothing from another origin. Everything else gets
the strict one.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_POLICY = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'self'; form-action 'self'"
)


def docs_policy(script_hashes: Iterable[str] = ()) -> str:
    """The CSP of the API docs pages: our own scripts plus the inline ones whose
    ``'sha256-...'`` sources are given, inline styles, blob: workers (ReDoc's search)."""
    scripts = " ".join(["'self'", *script_hashes])
    return (
        f"default-src 'self'; script-src {scripts}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self'; worker-src 'self' blob:; connect-src 'self'; "
        "object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    )


DOCS_POLICY = docs_policy()
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
