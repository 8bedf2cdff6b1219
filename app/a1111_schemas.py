"""The AUTOMATIC1111 request bodies (`/sdapi/v1/txt2img`, `/img2img`, `/png-info`), read forgivingly.

The clients that speak this protocol send 25 to 45 fields, most of them for features we do not have (and some send
`url` and `auth` junk beside them): unknown fields are ignored, every field may be null, and numbers are taken as the
clients send them (512.0 for 512, "7" for 7). Strings and lists are still bounded, so a body costs about its size.
Only the shape lives here: every limit (prompt length, sides, steps, images) is `GenerateRequest`'s or
`Img2ImgRequest`'s, which the routes build from these bodies (app/api/a1111/translate.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from app import schema_examples as examples

# Longer than our prompt limit on purpose: a long prompt is answered by GenerateRequest's own message.
Text = Annotated[str | None, Field(None, max_length=20_000)]
Label = Annotated[str | None, Field(None, max_length=256)]
Base64 = Annotated[str, Field(max_length=64 * 1024 * 1024)]  # the upload body limit bounds it first


class A1111Txt2Img(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [examples.A1111_TXT2IMG]})

    prompt: Text = ""
    negative_prompt: Text
    seed: float | None = Field(None, description="-1 or omitted: a random seed.")
    sampler_name: Label = Field(None, description='"Euler a", "DPM++ 2M Karras" (sampler + schedule), ...')
    sampler_index: str | int | None = Field(None, description="The legacy name of sampler_name.")
    scheduler: Label = Field(None, description='"automatic", "karras" (by name or label).')
    batch_size: float | None = None
    n_iter: float | None = None
    steps: float | None = None
    cfg_scale: float | None = None
    width: float | None = None
    height: float | None = None
    override_settings: dict[str, Any] | None = Field(None, description="sd_model_checkpoint and sd_vae are applied.")
    send_images: bool | None = None
    # Hires fix: refused when enabled (translate.py says what to do instead).
    enable_hr: bool | None = None
    denoising_strength: float | None = None


class A1111Img2Img(A1111Txt2Img):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.A1111_IMG2IMG]})

    init_images: list[Base64] | None = Field(None, max_length=16, description="The first one is redrawn.")
    mask: Base64 | None = Field(None, description="White: repaint, black: keep.")
    inpainting_mask_invert: float | None = None
    include_init_images: bool | None = None


class A1111PngInfo(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [examples.A1111_PNG_INFO]})

    image: Base64 = Field(description="Base64 PNG (a data: URL prefix is fine).")


# GenerateRequest's / Img2ImgRequest's field -> the A1111 field it was built from, so an error names what was sent.
A1111_FIELDS = {
    "num_images": "batch_size",
    "num_inference_steps": "steps",
    "guidance_scale": "cfg_scale",
    "model": "sd_model_checkpoint",
    "vae": "sd_vae",
    "loras": "prompt",
    "strength": "denoising_strength",
    "image": "init_images",
}


class A1111ErrorDetail(BaseModel):
    field: str
    message: str


class A1111Error(BaseModel):
    """An error under /sdapi/: A1111's clients show `detail`."""

    error: str = Field(description="Our error type (invalid_request, unauthorized, queue_full, ...).")
    detail: str
    field: str | None = Field(description="The A1111 field at fault, if one is.")
    errors: list[A1111ErrorDetail]


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of an A1111 route: any JSON object (unknown fields are ignored, numbers may come as
    strings), with the fields taken listed."""
    taken = ", ".join(model.model_fields)
    schema: dict[str, Any] = {"type": "object", "description": f"Taken: {taken}."}
    if isinstance(extra := model.model_config.get("json_schema_extra"), dict) and "examples" in extra:
        schema["examples"] = extra["examples"]
    return {"requestBody": {"required": False, "content": {"application/json": {"schema": schema}}}}
