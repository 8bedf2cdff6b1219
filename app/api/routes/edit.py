"""img2img and inpaint: a picture in, a picture out, with the default or a named model."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.deps import ServiceDep
from app.api.response_docs import IMAGE_RESPONSES
from app.api.responses import accepted, check_png_single, finished, wants_async
from app.schemas import Img2ImgRequest, InpaintRequest

router = APIRouter(tags=["images"])

# Bodies that may carry images: SDXL_MAX_UPLOAD_BYTES.
UPLOAD_ROUTES = ("/img2img", "/inpaint", "/generate", "/sdapi/v1/img2img", "/sdapi/v1/png-info")


async def _run(body: Img2ImgRequest, request: Request, service: ServiceDep) -> Response:
    check_png_single(request, body.num_images)
    job = await service.submit_edit(body)
    if wants_async(request):
        return accepted(request, service, job)
    return await finished(request, service, await service.wait(job, request.is_disconnected))


@router.post("/img2img", responses=IMAGE_RESPONSES, summary="Redraw an image from a prompt")
async def img2img(body: Img2ImgRequest, request: Request, service: ServiceDep) -> Response:
    """The input comes as `image` (base64 PNG, JPEG or WebP) or `image_id` (a stored image); `strength` says
    how much of it is re-noised. The output keeps the input's size (rounded down to a multiple of 8) unless
    `width`/`height` are given. Answers like /generate."""
    return await _run(body, request, service)


@router.post("/inpaint", responses=IMAGE_RESPONSES, summary="Repaint the masked part of an image")
async def inpaint(body: InpaintRequest, request: Request, service: ServiceDep) -> Response:
    """As /img2img, plus a `mask` (base64) or `mask_id`: white is repainted, black kept. Answers like /generate."""
    return await _run(body, request, service)
