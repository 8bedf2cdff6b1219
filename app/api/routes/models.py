from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServiceDep
from app.api.response_docs import ERRORS
from app.schemas import ModelsResponse

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelsResponse, responses=ERRORS, summary="The model registry and cache")
async def list_models(service: ServiceDep) -> ModelsResponse:
    """Every model, loaded or not: where it lives (device, cpu, disk), its bytes, cache hits and misses, its last
    use and its defaults; and the LoRAs, VAEs, ControlNets and schedulers a request may name."""
    return ModelsResponse.model_validate(service.models_info())
