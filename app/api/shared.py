"""OpenAPI response declarations shared by several routes."""

from __future__ import annotations

from typing import Any

from app.schemas import ErrorResponse, ImageResponse

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    422: {"model": ErrorResponse, "description": "Invalid request; `field` names the culprit"},
    503: {"model": ErrorResponse, "description": "Not ready (model loading or failed)"},
}

IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ImageResponse,
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The stored image's id and seed, or the PNG itself with `Accept: image/png`",
    },
    404: {"model": ErrorResponse, "description": "Unknown image id"},
    **ERRORS,
}
