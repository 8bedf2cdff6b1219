from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import ServiceDep
from app.api.errors import render_error, retry_headers
from app.schemas import ErrorResponse, HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse, summary="Liveness: the process answers")
async def health() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses={503: {"model": ErrorResponse, "description": "Loading, failed or stopping"}},
    summary="Readiness: the base pipeline is loaded and new work is accepted",
)
async def ready(service: ServiceDep) -> ReadyResponse | JSONResponse:
    if service.ready:
        return ReadyResponse(status="ready", model=service.settings.model, device=service.device)
    return render_error("/ready", 503, "not_ready", service.not_ready_reason(), headers=retry_headers(503, None))


# Uptime checkers and load balancers probe with HEAD too; FastAPI adds no HEAD to a GET route. The same handler
# (uvicorn drops the body), kept out of the schema, whose operation ids are unique.
for _path, _handler, _model in (("/health", health, HealthResponse), ("/ready", ready, ReadyResponse)):
    router.add_api_route(
        _path, _handler, methods=["HEAD"], response_model=_model, include_in_schema=False, name=f"{_path[1:]}_head"
    )
