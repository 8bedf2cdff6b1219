"""The OpenAI-compatible images contract (`/v1/images/generations`, `/v1/models`).

Only the shape lives here: every limit (prompt length, sides, steps, n) is `GenerateRequest`'s, which the
route builds from this request, so the two APIs cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app import schema_examples as examples
from app.config import MAX_SIDE
from app.schemas import MAX_NUM_IMAGES, MAX_PROMPT_CHARS

SIZE_PATTERN = r"^(auto|[0-9]{1,5}x[0-9]{1,5})$"

# GenerateRequest's field -> the OpenAI request's, so a GenerateRequest error names what the client sent.
OPENAI_FIELDS = {
    "num_images": "n",
    "width": "size",
    "height": "size",
    "num_inference_steps": "steps",
    "guidance_scale": "guidance",
}


Quality = Literal["auto", "low", "medium", "high", "standard", "hd"]
OutputFormat = Literal["png", "jpeg", "webp"]


class OpenAIOptions(BaseModel):
    """What generations and edits share: the output, and the fields OpenAI clients send by habit."""

    # Unknown fields are an error, as on /generate; the ones OpenAI clients send by habit are accepted below.
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description=f"What to draw (1..{MAX_PROMPT_CHARS} chars).")
    model: str | None = Field(
        None,
        max_length=128,
        description="A model from /v1/models; OpenAI's own names (dall-e-3, gpt-image-1, ...) mean SDXL_OPENAI_MODEL "
        "(unset: the default model); omitted: the default model.",
    )
    n: int = Field(1, description=f"1..{MAX_NUM_IMAGES} images; image i uses seed + i.")
    size: str | None = Field(
        None,
        pattern=SIZE_PATTERN,
        description=f"'WxH', each a multiple of 8 in [256, {MAX_SIDE}]. OpenAI's presets 1792x1024, 1024x1792, "
        "1536x1024, 1024x1536 become the model's nearest trained shape at its native size; omitted or 'auto': the "
        "model's native square (edits: the input's size).",
        examples=["1024x1024"],
    )
    response_format: Literal["b64_json", "url"] | None = Field(
        None,
        description="'b64_json': the image inline; 'url': a /download/{id}.png URL (SDXL_PUBLIC_URL, else relative). "
        "Omitted: b64_json for gpt-image models, url otherwise (as OpenAI).",
    )
    quality: Quality | None = Field(
        None, description="low / medium: 1/2 / 3/4 of the model's default steps; high / hd: 1.5x; others: the default."
    )
    output_format: OutputFormat | None = Field(
        None, description="b64_json answers only: png (default, with provenance), jpeg or webp (re-encoded)."
    )
    output_compression: int | None = Field(None, ge=0, le=100, description="jpeg/webp quality, 0-100 (default 100).")
    # Extensions (the OpenAI client sends them with extra_body=...).
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = Field(None, description="Inference steps (num_inference_steps); wins over quality.")
    guidance: float | None = Field(None, description="Guidance scale (guidance_scale).")
    # Accepted for compatibility and ignored: SDXL draws opaque images and this service moderates nothing.
    background: Literal["auto", "transparent", "opaque"] | None = None
    moderation: Literal["auto", "low"] | None = None
    style: str | None = Field(None, max_length=64)
    user: str | None = Field(None, max_length=256)
    safety_identifier: str | None = Field(None, max_length=256)

    def common_fields(self, *, model: str | None, size: tuple[int, int] | None, steps: int | None) -> dict[str, Any]:
        """The fields of the equivalent native request (validated there); `model`, `size` and `steps` resolved by
        the route (openai_translate.py)."""
        fields: dict[str, Any] = {
            "prompt": self.prompt,
            "model": model,
            "negative_prompt": self.negative_prompt,
            "num_images": self.n,
            "num_inference_steps": self.steps if self.steps is not None else steps,
            "guidance_scale": self.guidance,
            "seed": self.seed,
        }
        if size is not None:
            fields |= {"width": size[0], "height": size[1]}
        return fields


class OpenAIImageRequest(OpenAIOptions):
    # A JSON body: numbers are JSON numbers, as on /generate and OpenAI's own API ("n": "2" or true is refused,
    # not read as 2 or 1). The edits' multipart form stays lax: every form field arrives as text.
    model_config = ConfigDict(json_schema_extra={"examples": [examples.OPENAI_GENERATE]}, strict=True)


class OpenAIEditRequest(OpenAIOptions):
    """The form fields of /v1/images/edits (the files come separately)."""

    input_fidelity: Literal["high", "low"] | None = None  # accepted and ignored, as `background`
    stream: Literal[False, "false"] | None = Field(None, description="Streaming is not offered.")


class OpenAIImage(BaseModel):
    b64_json: str | None = None
    url: str | None = None


class OpenAIImagesResponse(BaseModel):
    created: int = Field(description="Unix time the job was created.")
    data: list[OpenAIImage]
    output_format: OutputFormat | None = None
    size: str | None = None


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "sdxl-serve"


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class OpenAIErrorInfo(BaseModel):
    message: str
    type: Literal["invalid_request_error", "authentication_error", "rate_limit_error", "server_error"]
    param: str | None = Field(description="The request field at fault, if any.")
    code: str = Field(description="Our error type, e.g. invalid_request, queue_full, not_ready.")


class OpenAIErrorResponse(BaseModel):
    error: OpenAIErrorInfo
