"""Domain errors: engine and storage code raise these, never HTTP exceptions.

Each carries its HTTP status and a stable `type`; `app.api.errors` is the one place that turns them (and
FastAPI's own errors) into the one JSON error shape built by `error_body`. Nothing here imports FastAPI.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base of every error the service answers on purpose."""

    status_code = 500
    type = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details or []
        self.headers = headers or {}


class InvalidRequest(ServiceError):
    status_code = 422
    type = "invalid_request"


class InvalidId(ServiceError):
    status_code = 422
    type = "invalid_id"


class NotFound(ServiceError):
    status_code = 404
    type = "not_found"


class Unauthorized(ServiceError):
    status_code = 401
    type = "unauthorized"


class NotReady(ServiceError):
    status_code = 503
    type = "not_ready"


class ModelLoadError(ServiceError):
    status_code = 503
    type = "model_load_failed"


class StorageFull(ServiceError):
    status_code = 507
    type = "storage_full"


class StorageUnavailable(ServiceError):
    status_code = 503
    type = "storage_unavailable"


class OtherReplica(ServiceError):
    """The job runs on another replica: only that one can change it."""

    status_code = 409
    type = "other_replica"


class GenerationFailed(ServiceError):
    status_code = 500
    type = "generation_failed"


def error_body(
    type_: str, message: str, *, field: str | None = None, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, "field": field, "details": details or []}}
