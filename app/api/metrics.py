from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import ServiceDep

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(service: ServiceDep) -> Response:
    service.metrics.queue_depth.set(service.scheduler.depth)
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
