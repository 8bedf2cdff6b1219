"""The OpenAI-compatible images contract (`/v1/images/generations`, `/v1/models`).

Only the shape lives here: every limit (prompt length, sides, steps, n) is `GenerateRequest`'s, which the
route builds from this request, so the two APIs cannot drift apart.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


class OpenAIImageRequest(BaseModel):
    # Unknown fields are an error, as on /generate; the ones OpenAI clients send by habit are accepted below.
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description=f"What to draw (1..{MAX_PROMPT_CHARS} chars).")
    model: str | None = Field(None, description="A model from /v1/models; omitted: the default model.")
    n: int = Field(1, description=f"1..{MAX_NUM_IMAGES} images; image i uses seed + i.")
    size: str | None = Field(
        None,
        pattern=SIZE_PATTERN,
        description=f"'WxH', each a multiple of 8 in [256, {MAX_SIDE}]; omitted or 'auto': the model's native size.",
        examples=["1024x1024"],
    )
    response_format: Literal["b64_json", "url"] = Field(
        "b64_json", description="'b64_json': the PNG inline; 'url': an absolute /download/{id} URL."
    )
    # Extensions (the OpenAI client sends them with extra_body=...).
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = Field(None, description="Inference steps (num_inference_steps).")
    guidance: float | None = Field(None, description="Guidance scale (guidance_scale).")
    # Accepted for compatibility and ignored.
    quality: str | None = None
    style: str | None = None
    user: str | None = None

    def generate_fields(self) -> dict[str, Any]:
        """The fields of the equivalent GenerateRequest (validated there)."""
        fields: dict[str, Any] = {
            "prompt": self.prompt,
            "model": self.model,
            "negative_prompt": self.negative_prompt,
            "num_images": self.n,
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance,
            "seed": self.seed,
        }
        if self.size and self.size != "auto":
            width, height = re.fullmatch(r"([0-9]+)x([0-9]+)", self.size).groups()  # type: ignore[union-attr]
            fields |= {"width": int(width), "height": int(height)}
        return fields


class OpenAIImage(BaseModel):
    b64_json: str | None = None
    url: str | None = None


class OpenAIImagesResponse(BaseModel):
    created: int = Field(description="Unix time the job was created.")
    data: list[OpenAIImage]


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
