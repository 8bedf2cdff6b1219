"""OpenAI-compatible images API: `/v1/images/generations` and `/v1/models`, so the official clients work.

A thin translation onto the same service as `/generate`: OpenAI's vocabulary is put in our terms
(openai_translate.py), the request becomes a `GenerateRequest` (the one place limits live) and its errors are
renamed to the OpenAI fields the client sent. Errors under /v1/ take OpenAI's shape in
`app.api.errors.render_error`. Edits (multipart) are openai_edits.py, answered by `answer` here.
"""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import BaseModel, ValidationError

from app.api import openai_translate as translate
from app.api.deps import ServiceDep
from app.api.validation import with_rules
from app.engine import Engine, Job
from app.openai_schemas import (
    OPENAI_FIELDS,
    OpenAIErrorResponse,
    OpenAIImage,
    OpenAIImageRequest,
    OpenAIImagesResponse,
    OpenAIModel,
    OpenAIModelList,
    OpenAIOptions,
)
from app.schemas import GenerateRequest

router = APIRouter(prefix="/v1", tags=["openai"])

OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIErrorResponse, "description": description}
    for status, description in {
        401: "Missing or wrong API key",
        422: "Invalid request; `param` names the field",
        429: "Queue full; retry after `Retry-After` seconds",
        503: "Not ready, shutting down, queue timeout or out of memory",
    }.items()
}


def renamed(error: Any) -> Any:
    field = str(error["loc"][0]) if error.get("loc") else "body"
    name = OPENAI_FIELDS.get(field, field)
    if name == field:
        return {**error, "loc": ("body", name)}
    return {**error, "loc": ("body", name), "msg": f"{field}: {error['msg']}"}


def validated(model: type[BaseModel], fields: dict[str, Any]) -> Any:
    """The native request (the one place limits live); its errors name the OpenAI field the client sent."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError([renamed(e) for e in with_rules(model, exc.errors())]) from None


def native_fields(body: OpenAIOptions, service: Engine) -> dict[str, Any]:
    """The native request's fields: OpenAI's model names, size presets and quality in our terms."""
    model = translate.model_for(body.model, service.model_names(), service.settings.openai_model)
    defaults = service.model_defaults(model)  # an unknown model: 422 naming the choices
    size = translate.size_for(body.size, defaults.size)  # None: the native square (edits: the input's size)
    max_steps = min(defaults.max_steps or service.settings.max_steps, service.settings.max_steps)
    steps = translate.steps_for(body.quality, defaults.steps, max_steps)
    return body.common_fields(model=model, size=size, steps=steps)


def _transcode(png: bytes, output_format: str, quality: int) -> bytes:
    with Image.open(io.BytesIO(png)) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, format=output_format.upper(), quality=quality)
        return out.getvalue()


async def answer(request: Request, service: Engine, body: OpenAIOptions, job: Job) -> OpenAIImagesResponse:
    request.state.timings = job.timings
    output_format = body.output_format or "png"
    if translate.response_format_for(body.response_format, body.model) == "url":
        # Never from the Host header, which the client controls: the configured public URL, else a relative one.
        base = service.settings.public_url or request.scope.get("root_path", "")
        data = [OpenAIImage(url=base + request.app.url_path_for("download_png", id=image.id)) for image in job.images]
        output_format = "png"  # what the URL serves: the stored image, with its provenance
    else:
        pngs = await asyncio.gather(*(service.png(image.id) for image in job.images))
        if output_format != "png":  # off the loop: an encode is tens of milliseconds at 1024²
            quality = 100 if body.output_compression is None else body.output_compression
            pngs = await asyncio.gather(*(asyncio.to_thread(_transcode, p, output_format, quality) for p in pngs))
        data = [OpenAIImage(b64_json=base64.b64encode(png).decode()) for png in pngs]
    first = job.images[0]
    return OpenAIImagesResponse(
        created=int(job.created), data=data, output_format=output_format, size=f"{first.width}x{first.height}"
    )


@router.post(
    "/images/generations",
    response_model=OpenAIImagesResponse,
    response_model_exclude_none=True,
    responses=OPENAI_ERRORS,
    summary="OpenAI-compatible image generation",
)
async def create_images(body: OpenAIImageRequest, request: Request, service: ServiceDep) -> OpenAIImagesResponse:
    """`client.images.generate(...)` from the official OpenAI clients; `extra_body` may carry `negative_prompt`,
    `seed`, `steps` and `guidance`."""
    job = await service.submit_generate(validated(GenerateRequest, native_fields(body, service)))
    job = await service.wait(job, request.is_disconnected)
    return await answer(request, service, body, job)


@router.get("/models", response_model=OpenAIModelList, responses={401: OPENAI_ERRORS[401]}, summary="The models")
async def list_models(service: ServiceDep) -> OpenAIModelList:
    """Every registry model, the default first; GET /models has where each lives and its defaults."""
    names = service.model_names()
    return OpenAIModelList(data=[OpenAIModel(id=name) for name in names])
