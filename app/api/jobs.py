from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from app.api.deps import ServiceDep
from app.api.shared import ERRORS
from app.engine.jobs import Job
from app.engine.service import ImageService
from app.schemas import ErrorResponse, JobResponse

router = APIRouter(prefix="/jobs", tags=["jobs"])

_JOB_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown (or expired) job id"},
    **ERRORS,
}


def job_view(service: ImageService, job: Job) -> dict[str, Any]:
    return job.snapshot(service.scheduler.position(job))


@router.get("/{id}", response_model=JobResponse, responses=_JOB_ERRORS, summary="A job's status and progress")
async def get_job(id: str, service: ServiceDep) -> dict[str, Any]:  # noqa: A002 - the API's name
    return job_view(service, service.jobs.get(id))


@router.delete("/{id}", response_model=JobResponse, responses=_JOB_ERRORS, summary="Cancel a job")
async def cancel_job(id: str, service: ServiceDep) -> dict[str, Any]:  # noqa: A002
    """Cancels a queued job at once, or interrupts a running one at its next denoising step."""
    return job_view(service, service.cancel(service.jobs.get(id)))


@router.get(
    "/{id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **_JOB_ERRORS},
    summary="A job's changes as Server-Sent Events, until it ends",
)
async def job_events(id: str, service: ServiceDep) -> StreamingResponse:  # noqa: A002
    job = service.jobs.get(id)

    async def stream() -> AsyncIterator[str]:
        last = None
        while True:
            view = job_view(service, job)
            if view != last:
                yield f"event: job\ndata: {json.dumps(view)}\n\n"
                last = view
            if job.status.terminal:
                return
            await job.changed(timeout=15)
            if view == job_view(service, job):
                yield ": keep-alive\n\n"  # proxies close idle streams

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})
