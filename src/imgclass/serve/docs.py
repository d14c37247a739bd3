"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from the package's own copies.

FastAPI's default pages load both from cdn.jsdelivr.net (and ReDoc's fonts from Google),
so they were blank on a machine without internet. The assets are vendored from npm under
``static/vendor/`` (versions and licences in each folder's VERSION.md) and the pages are
FastAPI's own HTML with our URLs. Their one inline start-up script is allowed by its
SHA-256 hash in the page's Content-Security-Policy: no CDN, no 'unsafe-inline' script.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse

from imgclass.serve.security import docs_policy

DOCS = "/docs"
REDOC = "/redoc"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
VENDOR = "/static/vendor"
FAVICON = "/static/favicon.svg"
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def with_policy(page: HTMLResponse) -> HTMLResponse:
    """``page`` with a CSP that allows its inline scripts by hash and nothing remote."""
    html = bytes(page.body).decode()
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in INLINE_SCRIPT.findall(html)
    ]
    return HTMLResponse(html, headers={"content-security-policy": docs_policy(hashes)})


def install_docs(app: FastAPI) -> None:
    """Add the three documentation routes to ``app`` (created with docs_url=None,
    redoc_url=None); each page is built once, at start-up."""
    title = f"{app.title} — API"
    openapi = app.openapi_url or "/openapi.json"
    swagger = with_policy(
        get_swagger_ui_html(
            openapi_url=openapi,
            title=title,
            oauth2_redirect_url=OAUTH2_REDIRECT,
            swagger_js_url=f"{VENDOR}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{VENDOR}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=FAVICON,
        )
    )
    redirect = with_policy(get_swagger_ui_oauth2_redirect_html())
    redoc = with_policy(
        get_redoc_html(
            openapi_url=openapi,
            title=title,
            redoc_js_url=f"{VENDOR}/redoc/redoc.standalone.js",
            redoc_favicon_url=FAVICON,
            with_google_fonts=False,
        )
    )
    for path, page in ((DOCS, swagger), (OAUTH2_REDIRECT, redirect), (REDOC, redoc)):
        app.add_api_route(path, _serve(page), include_in_schema=False, methods=["GET"])


def _serve(page: HTMLResponse) -> Callable[[], HTMLResponse]:
    """A route handler answering a fresh copy of ``page`` (same body and headers)."""

    def handler() -> HTMLResponse:
        return HTMLResponse(
            page.body, headers={"content-security-policy": page.headers["content-security-policy"]}
        )

    return handler
