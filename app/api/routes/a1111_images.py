"""AUTOMATIC1111's image routes under /sdapi/v1: txt2img, img2img (and inpainting) and png-info.

Synchronous, as A1111's: each request becomes a native `GenerateRequest` / `Img2ImgRequest` (app/api/a1111/
translate.py) and goes through the same queue, limits, batching, provenance and storage as /generate. Errors under
/sdapi/ take A1111's shape (`detail`) in `app.api.errors.render_error`. Bodies are JSON with or without a
Content-Type (a1111/bodies.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from app.a1111_schemas import A1111Img2Img, A1111PngInfo, A1111Txt2Img, body_doc
from app.api.a1111 import answers, infotext, translate
from app.api.a1111.bodies import json_body
from app.api.a1111.checkpoints import Checkpoints
from app.api.deps import CheckpointsDep, ServiceDep
from app.api.response_docs import A1111_IMAGE_ERRORS
from app.engine import Engine, Job

router = APIRouter(prefix="/sdapi/v1", tags=["a1111"], responses=A1111_IMAGE_ERRORS)

Txt2ImgBody = Annotated[A1111Txt2Img, Depends(json_body(A1111Txt2Img))]
Img2ImgBody = Annotated[A1111Img2Img, Depends(json_body(A1111Img2Img))]
PngInfoBody = Annotated[A1111PngInfo, Depends(json_body(A1111PngInfo))]


async def _finished(request: Request, service: Engine, checkpoints: Checkpoints, job: Job) -> Job:
    checkpoints.in_flight.add(job)  # so /interrupt can stop it
    try:
        return await service.wait(job, request.is_disconnected)
    finally:
        checkpoints.in_flight.discard(job)


@router.post("/txt2img", summary="A1111 txt2img", openapi_extra=body_doc(A1111Txt2Img))
async def txt2img(body: Txt2ImgBody, request: Request, service: ServiceDep, checkpoints: CheckpointsDep) -> Any:
    """`{images: [base64 PNG], parameters, info: "<JSON>"}`; unknown fields are ignored."""
    job = await service.submit_generate(translate.txt2img(body, service, checkpoints))
    return await answers.images_answer(body, service, await _finished(request, service, checkpoints, job))


@router.post("/img2img", summary="A1111 img2img and inpainting", openapi_extra=body_doc(A1111Img2Img))
async def img2img(body: Img2ImgBody, request: Request, service: ServiceDep, checkpoints: CheckpointsDep) -> Any:
    """The first of `init_images` is redrawn; with a `mask`, only its white part. Answers like txt2img."""
    job = await service.submit_edit(translate.img2img(body, service, checkpoints))
    return await answers.images_answer(body, service, await _finished(request, service, checkpoints, job))


@router.post(
    "/png-info", summary="A1111 png-info: an image's generation parameters", openapi_extra=body_doc(A1111PngInfo)
)
async def png_info(body: PngInfoBody, service: ServiceDep) -> Any:
    """`info` is the image's `parameters` text ("" if none), `parameters` that text read into fields, `items` its
    other text chunks."""
    texts = await service.image_text(body.image)
    info = texts.pop("parameters", "")
    return {"info": info, "items": texts, "parameters": infotext.parse(info) if info else {}}
