"""Shared dependencies as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from imgclass.serve.app import State
from imgclass.serve.predictor import BadInput


async def get_state(request: Request) -> State:
    # async: a sync dependency would cost every request a trip through a worker thread
    return request.app.state.imgclass  # type: ignore[no-any-return]


StateDep = Annotated[State, Depends(get_state)]


def require_admin(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """Admin endpoints need ``Authorization: Bearer <IMGCLASS_ADMIN_TOKEN>``; off without a token."""
    import hmac

    token = state.settings.admin_token
    if not token:
        raise BadInput("admin endpoints are disabled (set IMGCLASS_ADMIN_TOKEN)", 403)
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise BadInput("a valid admin token is required (Authorization: Bearer ...)", 401)


AdminDep = Annotated[None, Depends(require_admin)]
