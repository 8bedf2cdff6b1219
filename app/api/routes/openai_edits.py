"""OpenAI-compatible `/v1/images/edits`: multipart in, our inpaint (with a mask) or img2img (without) out.

The form holds the image as `image` (the official client's field for one file) or `image[]` (for a list; one image
is accepted, since SDXL edits one), an optional `mask` whose fully transparent pixels mark what to redraw (OpenAI's
convention), and the same fields as generations. The files become the native request's base64 fields, so they
are checked like every upload (formats, pixel count, size) and their limits are the native ones.
"""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from app.api.deps import ServiceDep
from app.api.routes.openai_images import OPENAI_ERRORS, answer, native_fields, renamed, validated
from app.engine.images.inputs import open_image
from app.errors import InvalidRequest
from app.openai_schemas import OpenAIEditRequest, OpenAIImagesResponse
from app.schemas import Img2ImgRequest, InpaintRequest

router = APIRouter(prefix="/v1", tags=["openai"])

EDIT_ROUTES = ("/v1/images/edits",)  # bodies that carry images: SDXL_MAX_UPLOAD_BYTES
_FILES = ("image", "image[]", "mask")
MAX_FORM_FIELDS = 32


def _mask_from_alpha(data: bytes, max_pixels: int, min_side: int) -> bytes:
    """OpenAI's mask (alpha 0: edit here) as ours (white: repaint, black: keep), a PNG."""
    mask = open_image(data, "mask", max_pixels=max_pixels, min_side=min_side, mode="RGBA")
    alpha = mask.getchannel("A")
    if alpha.getextrema()[0] == 255:
        raise InvalidRequest("mask must have transparent pixels (alpha 0): they mark the area to edit", field="mask")
    ours = alpha.point(lambda a: 255 if a == 0 else 0, mode="L")
    out = io.BytesIO()
    ours.save(out, format="PNG")
    return out.getvalue()


async def _read(upload: UploadFile, field: str, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise InvalidRequest(f"{field} is larger than {limit} bytes (SDXL_MAX_UPLOAD_BYTES)", field=field)
    return data


@router.post(
    "/images/edits",
    response_model=OpenAIImagesResponse,
    response_model_exclude_none=True,
    responses=OPENAI_ERRORS,
    summary="OpenAI-compatible image edit (inpaint with a mask, img2img without)",
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["image", "prompt"],
                        "properties": {
                            "image": {"type": "string", "format": "binary"},
                            "mask": {"type": "string", "format": "binary"},
                            **{
                                name: {"type": "string"}
                                for name in OpenAIEditRequest.model_fields
                                if name not in ("image", "mask")
                            },
                        },
                    }
                }
            },
            "required": True,
        }
    },
)
async def edit_images(request: Request, service: ServiceDep) -> OpenAIImagesResponse:
    """`client.images.edit(image=..., mask=..., prompt=...)` from the official OpenAI clients."""
    settings = service.settings
    limit = settings.max_upload_bytes
    async with request.form(max_files=len(_FILES) + 1, max_fields=MAX_FORM_FIELDS, max_part_size=limit) as form:
        images = [f for key in ("image", "image[]") for f in form.getlist(key)]
        if len(images) != 1 or not all(isinstance(f, UploadFile) for f in images):
            got = f"got {len(images)}" if images else "none was sent"
            raise InvalidRequest(f"image: one image file is required (as `image` or `image[]`); {got}", field="image")
        mask_file = form.get("mask")
        if mask_file is not None and not isinstance(mask_file, UploadFile):
            raise InvalidRequest("mask: must be a file (a PNG whose transparent pixels are redrawn)", field="mask")
        fields: dict[str, Any] = {k: v for k, v in form.multi_items() if k not in _FILES}
        try:
            body = OpenAIEditRequest.model_validate(fields)
        except ValidationError as exc:
            raise RequestValidationError([renamed(e) for e in exc.errors()]) from None
        image = await _read(images[0], "image", limit)  # type: ignore[arg-type]
        mask = None if mask_file is None else await _read(mask_file, "mask", limit)
    native = native_fields(body, service)
    native["image"] = base64.b64encode(image).decode()
    if mask is None:
        req = validated(Img2ImgRequest, native)
    else:
        ours = await asyncio.to_thread(_mask_from_alpha, mask, settings.max_pixels, settings.min_upload_side)
        req = validated(InpaintRequest, native | {"mask": base64.b64encode(ours).decode()})
    job = await service.submit_edit(req)
    job = await service.wait(job, request.is_disconnected)
    return await answer(request, service, body, job)
