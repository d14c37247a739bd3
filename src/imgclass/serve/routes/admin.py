"""``POST /v1/admin/reload``: check the model registry now and switch to a new champion
(``Authorization: Bearer <IMGCLASS_ADMIN_TOKEN>``; off when no token is set).

Only the worker process that answers is reloaded; with ``--workers N`` the others
follow on their next poll (``registry_poll_seconds``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from imgclass.errors import RegistryError
from imgclass.serve.predictor import BadInput
from imgclass.serve.routes.deps import AdminDep, StateDep
from imgclass.serve.schemas import Reloaded

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post(
    "/reload",
    response_model=Reloaded,
    responses={
        401: {"description": "no or wrong admin token"},
        403: {"description": "admin endpoints are disabled (no token set)"},
        409: {"description": "the server does not serve from the registry"},
        503: {"description": "the registry or the new version could not be loaded"},
    },
)
def reload(_: AdminDep, state: StateDep) -> dict[str, Any]:
    """Serve the registry's current champion: ``{"model", "version", "previous",
    "changed"}``. The new version is loaded completely before it replaces the old one;
    requests in flight finish on the version they started with."""
    watcher = state.watcher
    if watcher is None:
        raise BadInput(
            "this server does not serve from the model registry (start it with "
            "`imgclass serve --registry NAME`)",
            409,
        )
    try:
        result = watcher.check(force=True)
    except RegistryError as exc:
        serving = watcher.serving()
        raise BadInput(f"{exc}; still serving version {serving}", 503) from None
    return result.to_dict()
