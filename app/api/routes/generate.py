from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.deps import ServiceDep
from app.api.response_docs import IMAGE_RESPONSES
from app.api.responses import accepted, check_png_single, finished, wants_async
from app.schemas import GenerateRequest

router = APIRouter(tags=["images"])


@router.post("/generate", responses=IMAGE_RESPONSES, summary="Generate images from a prompt")
async def generate(body: GenerateRequest, request: Request, service: ServiceDep) -> Response:
    """Runs the SDXL base pipeline, stores PNGs and returns their ids and seeds.

    `Accept: image/png` returns the PNG itself (id in `X-Image-Id`, seed in `X-Seed`).
    `Prefer: respond-async` returns 202 with a job at once; follow it at `/jobs/{id}`.
    """
    check_png_single(request, body.num_images)
    job = await service.submit_generate(body)
    if wants_async(request):
        return accepted(request, service, job)
    return await finished(request, service, await service.wait(job, request.is_disconnected))
