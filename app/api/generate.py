from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.deps import ServiceDep
from app.api.responses import image_response
from app.api.shared import IMAGE_RESPONSES
from app.schemas import GenerateRequest

router = APIRouter(tags=["images"])


@router.post("/generate", responses=IMAGE_RESPONSES, summary="Generate an image from a prompt")
async def generate(body: GenerateRequest, request: Request, service: ServiceDep) -> Response:
    """Runs the SDXL base pipeline, stores a PNG and returns its id and seed.

    Send `Accept: image/png` to get the PNG itself (its id in `X-Image-Id`, its seed in `X-Seed`).
    """
    return image_response(request, await service.generate(body))
