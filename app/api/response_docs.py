"""OpenAPI response declarations shared by several routes."""

from __future__ import annotations

from typing import Any

from app.schemas import ErrorResponse, ImageResponse, JobResponse

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    422: {"model": ErrorResponse, "description": "Invalid request; `field` names the culprit"},
    503: {"model": ErrorResponse, "description": "Not ready, shutting down, queue timeout or out of memory"},
}

IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ImageResponse,
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The stored image's id and seed, or the PNG itself with `Accept: image/png`",
    },
    202: {"model": JobResponse, "description": "With `Prefer: respond-async`: the job, at /jobs/{id}"},
    404: {"model": ErrorResponse, "description": "Unknown image id"},
    409: {"model": ErrorResponse, "description": "The job was cancelled"},
    429: {"model": ErrorResponse, "description": "Queue full; retry after `Retry-After` seconds"},
    **ERRORS,
}
