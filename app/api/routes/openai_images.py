"""OpenAI-compatible images API: `/v1/images/generations` and `/v1/models`, so the official clients work.

A thin translation onto the same service as `/generate`: the request becomes a `GenerateRequest` (the one
place limits live) and its errors are renamed to the OpenAI fields the client sent. Errors under /v1/ take
OpenAI's shape in `app.api.errors.render_error`.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.api.deps import ServiceDep
from app.openai_schemas import (
    OPENAI_FIELDS,
    OpenAIErrorResponse,
    OpenAIImage,
    OpenAIImageRequest,
    OpenAIImagesResponse,
    OpenAIModel,
    OpenAIModelList,
)
from app.schemas import GenerateRequest

router = APIRouter(prefix="/v1", tags=["openai"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIErrorResponse, "description": description}
    for status, description in {
        401: "Missing or wrong API key",
        422: "Invalid request; `param` names the field",
        429: "Queue full; retry after `Retry-After` seconds",
        503: "Not ready, shutting down, queue timeout or out of memory",
    }.items()
}


def _renamed(error: Any) -> Any:
    field = str(error["loc"][0]) if error.get("loc") else "body"
    name = OPENAI_FIELDS.get(field, field)
    if name == field:
        return {**error, "loc": ("body", name)}
    return {**error, "loc": ("body", name), "msg": f"{field}: {error['msg']}"}


def to_generate_request(body: OpenAIImageRequest) -> GenerateRequest:
    """The model is checked against the registry like every other request (422 listing the choices)."""
    try:
        return GenerateRequest.model_validate(body.generate_fields())
    except ValidationError as exc:
        # The same 422 as a bad body, naming the OpenAI field (size, n, steps, ...) rather than ours.
        raise RequestValidationError([_renamed(e) for e in exc.errors()]) from None


@router.post(
    "/images/generations",
    response_model=OpenAIImagesResponse,
    response_model_exclude_none=True,
    responses=_ERRORS,
    summary="OpenAI-compatible image generation",
)
async def create_images(body: OpenAIImageRequest, request: Request, service: ServiceDep) -> OpenAIImagesResponse:
    """`client.images.generate(...)` from the official OpenAI clients; `extra_body` may carry `negative_prompt`,
    `seed`, `steps` and `guidance`."""
    job = await service.submit_generate(to_generate_request(body))
    job = await service.wait(job, request.is_disconnected)
    request.state.timings = job.timings
    if body.response_format == "url":
        # Never from the Host header, which the client controls: the configured public URL, else a relative one.
        base = service.settings.public_url or request.scope.get("root_path", "")
        data = [OpenAIImage(url=base + request.app.url_path_for("download", id=image.id)) for image in job.images]
    else:
        pngs = await asyncio.gather(*(service.png(image.id) for image in job.images))
        data = [OpenAIImage(b64_json=base64.b64encode(png).decode()) for png in pngs]
    return OpenAIImagesResponse(created=int(job.created), data=data)


@router.get("/models", response_model=OpenAIModelList, responses={401: _ERRORS[401]}, summary="The models")
async def list_models(service: ServiceDep) -> OpenAIModelList:
    """Every registry model, the default first; GET /models has where each lives and its defaults."""
    names = service.model_names()
    return OpenAIModelList(data=[OpenAIModel(id=name) for name in names])
