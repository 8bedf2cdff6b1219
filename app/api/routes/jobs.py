from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from app.api.deps import ServiceDep
from app.api.response_docs import ERRORS
from app.engine import Engine, Job
from app.schemas import ErrorResponse, JobResponse

router = APIRouter(prefix="/jobs", tags=["jobs"])

_JOB_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown (or expired) job id"},
    **ERRORS,
}


def job_view(service: Engine, job: Job) -> dict[str, Any]:
    return service.view(job)


@router.get("/{id}", response_model=JobResponse, responses=_JOB_ERRORS, summary="A job's status and progress")
async def get_job(id: str, service: ServiceDep) -> dict[str, Any]:  # noqa: A002 - the API's name
    """Any replica answers for any job: another replica's job is read from its record in the shared store, and reads
    failed (`replica_lost`) once the process that ran it stopped renewing its lease."""
    return await service.find_job(id)


@router.delete(
    "/{id}",
    response_model=JobResponse,
    responses={409: {"model": ErrorResponse, "description": "The job runs on another replica"}, **_JOB_ERRORS},
    summary="Cancel a job",
)
async def cancel_job(id: str, service: ServiceDep) -> dict[str, Any]:  # noqa: A002
    """Cancels a queued job at once, or interrupts a running one at its next denoising step.

    A job running on another replica answers 409 `other_replica`: only that replica can stop it. One that ended
    there, or whose replica is gone (`replica_lost`), is answered as it ended."""
    return await service.cancel_job(id)


@router.get(
    "/{id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **_JOB_ERRORS},
    summary="A job's changes as Server-Sent Events, until it ends",
)
async def job_events(id: str, service: ServiceDep) -> StreamingResponse:  # noqa: A002
    views = await service.watch_job(id)  # an unknown id is a 404 here, before the stream starts

    async def stream() -> AsyncIterator[str]:
        async for view in views:
            yield ": keep-alive\n\n" if view is None else f"event: job\ndata: {json.dumps(view)}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})
