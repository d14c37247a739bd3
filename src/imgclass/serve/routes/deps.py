"""Shared dependencies as ``Annotated`` aliases."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from imgclass.serve.predictor import BadInput
from imgclass.serve.state import State


async def get_state(request: Request) -> State:
    # async: a sync dependency would cost every request a trip through a worker thread
    return request.app.state.imgclass  # type: ignore[no-any-return]


StateDep = Annotated[State, Depends(get_state)]


def require_admin(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """Admin endpoints need ``Authorization: Bearer <IMGCLASS_ADMIN_TOKEN>``; off without a
    token. The scheme is required and matched without regard to case (RFC 7235); the
    token is compared in constant time. A refusal is 401 with ``WWW-Authenticate``."""
    token = state.settings.admin_token
    if not token:
        raise BadInput("admin endpoints are disabled (set IMGCLASS_ADMIN_TOKEN)", 403)
    given = bearer_token(authorization)
    if given is None or not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(
            401,
            "a valid admin token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": 'Bearer realm="imgclass admin"'},
        )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None for no header,
    another scheme, a token without a scheme, or no token."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


AdminDep = Annotated[None, Depends(require_admin)]
