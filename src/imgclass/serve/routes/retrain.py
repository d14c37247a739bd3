"""Admin endpoints for retraining (``Authorization: Bearer <IMGCLASS_ADMIN_TOKEN>``):
start ``imgclass retrain`` as a background job and poll it.

- ``POST /v1/admin/retrain`` (optional JSON settings) -> 202 ``{"job": id, "status": ...}``;
  409 while another retrain runs.
- ``GET /v1/admin/retrain/{job}`` -> status (queued, running, succeeded, failed), the
  tail of its log and, when it succeeded, the outcome (numbers, decision, versions).
- ``GET /v1/admin/retrain`` -> every job, newest first.
- ``POST /v1/admin/retrain/{job}/cancel`` -> 202, the job stopping (status ``cancelled``
  once it has); 409 when it has already ended.

The job is a subprocess (``imgclass.feedback.jobs``): a crash there cannot hurt the
server, and a promotion it makes reaches the server through the registry watcher.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from imgclass.feedback.jobs import JobBusy, JobNotActive, JobNotFound, RetrainJobs
from imgclass.serve.inputs import SafeJSONRoute
from imgclass.serve.predictor import BadInput
from imgclass.serve.routes.deps import AdminDep, StateDep
from imgclass.serve.schemas import JobStarted, JobState, RetrainRequest
from imgclass.serve.settings import ServeSettings

router = APIRouter(prefix="/v1/admin/retrain", tags=["retrain"], route_class=SafeJSONRoute)


def get_jobs(request: Request, state: StateDep) -> RetrainJobs:
    """The server's job runner, made on first use from its settings."""
    jobs: RetrainJobs | None = getattr(request.app.state, "retrain_jobs", None)
    if jobs is None:
        jobs = make_jobs(state.settings)
        request.app.state.retrain_jobs = jobs
    return jobs


def make_jobs(settings: ServeSettings) -> RetrainJobs:
    """RetrainJobs running ``imgclass retrain`` on the server's registry, feedback store
    and tracking store."""
    name = settings.retrain_registry or settings.registry
    if not name:
        raise BadInput(
            "retraining needs a registered model: serve with --registry NAME or set "
            "IMGCLASS_RETRAIN_REGISTRY",
            409,
        )
    command = ["retrain", "--registry", name]
    command += ["--feedback-db", str(settings.feedback_url or settings.feedback_db)]
    if settings.tracking_uri:
        command += ["--tracking-uri", settings.tracking_uri]
    if settings.retrain_data:
        command += ["--data", str(settings.retrain_data)]
    return RetrainJobs(settings.retrain_jobs, command)


JobsDep = Annotated[RetrainJobs, Depends(get_jobs)]


@router.post("", status_code=202, response_model=JobStarted)
def start_retrain(_: AdminDep, jobs: JobsDep, body: RetrainRequest | None = None) -> dict[str, Any]:
    """Start a retrain in the background; poll ``GET /v1/admin/retrain/{job}``."""
    try:
        record = jobs.start((body or RetrainRequest()).arguments())
    except JobBusy as exc:
        raise BadInput(str(exc), 409) from None
    return {"job": record["id"], "status": record["status"]}


@router.get("", response_model=list[JobState])
def list_retrains(_: AdminDep, jobs: JobsDep) -> list[dict[str, Any]]:
    """Every retrain job, newest first."""
    return jobs.records()


@router.get("/{job}", response_model=JobState)
def retrain_status(job: str, _: AdminDep, jobs: JobsDep) -> dict[str, Any]:
    """A job's status, log tail and (when it succeeded) its outcome."""
    try:
        return jobs.get(job)
    except JobNotFound as exc:
        raise BadInput(str(exc), 404) from None


@router.post("/{job}/cancel", status_code=202, response_model=JobState)
def cancel_retrain(job: str, _: AdminDep, jobs: JobsDep) -> dict[str, Any]:
    """Stop a running job; it then reads ``cancelled``. The champion and the feedback
    store are left as they were."""
    try:
        return jobs.cancel(job)
    except JobNotFound as exc:
        raise BadInput(str(exc), 404) from None
    except JobNotActive as exc:
        raise BadInput(str(exc), 409) from None
