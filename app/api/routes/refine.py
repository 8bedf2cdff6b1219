from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.deps import ServiceDep
from app.api.response_docs import IMAGE_RESPONSES
from app.api.responses import accepted, finished, wants_async
from app.schemas import RefineRequest

router = APIRouter(tags=["images"])


@router.post("/refine", responses=IMAGE_RESPONSES, summary="Refine a stored image with the SDXL refiner")
async def refine(body: RefineRequest, request: Request, service: ServiceDep) -> Response:
    """Runs the refiner over the stored image `id` and stores the result under a new id.

    The refiner is loaded on first use (that call takes longer) and shares the base's text_encoder_2 and VAE.
    `Prefer: respond-async` returns 202 with a job at once.
    """
    job = await service.submit_refine(body)
    if wants_async(request):
        return accepted(request, service, job)
    return await finished(request, service, await service.wait(job, request.is_disconnected))
