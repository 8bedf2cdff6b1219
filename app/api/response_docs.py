"""OpenAPI response declarations shared by several routes."""

from __future__ import annotations

from typing import Any

from app.a1111_schemas import A1111Error
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

# Under /sdapi/: the same statuses, in A1111's error shape (app.api.errors.render_error).
A1111_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": A1111Error, "description": "Missing or wrong key (HTTP Basic: the key as password)"},
    413: {"model": A1111Error, "description": "Body over SDXL_MAX_BODY_BYTES (SDXL_MAX_UPLOAD_BYTES with images)"},
    422: {"model": A1111Error, "description": "Invalid request; `field` names the A1111 field"},
    503: {"model": A1111Error, "description": "Not ready, shutting down, queue timeout or out of memory"},
}
A1111_IMAGE_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"model": A1111Error, "description": "Interrupted (POST /sdapi/v1/interrupt) or cancelled"},
    429: {"model": A1111Error, "description": "Queue full; retry after `Retry-After` seconds"},
    **A1111_ERRORS,
}
