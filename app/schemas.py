"""The API contract: request and response models, with every limit declared next to its field.

These limits are the hard ceilings (they show in /docs). Settings may lower some of them (SDXL_MAX_SIDE,
SDXL_MAX_PIXELS, SDXL_MAX_STEPS); the engine checks those and answers 422 the same way.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.config import MAX_SIDE, MAX_STEPS
from app.storage.ids import ID_PATTERN

MAX_PROMPT_CHARS = 2000
MAX_SEED = 2**32 - 1
MAX_NUM_IMAGES = 8

Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
OptionalPrompt = Annotated[str | None, Field(None, max_length=MAX_PROMPT_CHARS)]
Side = Annotated[
    int | None,
    Field(
        None,
        ge=256,
        le=MAX_SIDE,
        multiple_of=8,
        description=f"Multiple of 8 in [256, {MAX_SIDE}]; default: the model's native size (SDXL 1024, tiny 256).",
    ),
]
Steps = Annotated[int | None, Field(None, ge=1, le=MAX_STEPS, description=f"1..{MAX_STEPS}; default: the model's.")]
Guidance = Annotated[float | None, Field(None, ge=0.0, le=30.0, description="0..30; default: the model's.")]
Seed = Annotated[
    int | None,
    Field(None, ge=0, le=MAX_SEED, description="0..2^32-1; omitted: a random seed, returned in the response."),
]


class _Request(BaseModel):
    # Unknown fields are an error: a typo such as "steps" must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @field_validator("prompt", check_fields=False)
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must contain a non-whitespace character")
        return value


class GenerateRequest(_Request):
    prompt: Prompt = Field(description="What to draw.", examples=["a lighthouse at dusk, oil painting"])
    negative_prompt: OptionalPrompt
    prompt_2: OptionalPrompt = Field(None, description="Prompt for the second text encoder; default: prompt.")
    negative_prompt_2: OptionalPrompt
    width: Side
    height: Side
    num_inference_steps: Steps
    guidance_scale: Guidance
    seed: Seed
    num_images: int = Field(
        1, ge=1, le=MAX_NUM_IMAGES, description=f"1..{MAX_NUM_IMAGES} images; image i uses seed + i."
    )


class RefineRequest(_Request):
    id: str = Field(pattern=ID_PATTERN, description="Id of a stored image to refine.")
    prompt: Prompt
    negative_prompt: OptionalPrompt
    strength: float = Field(
        0.3, gt=0.0, le=1.0, description="How much of the image to re-noise; steps run = int(steps * strength)."
    )
    num_inference_steps: Steps
    guidance_scale: Guidance
    aesthetic_score: float = Field(6.0, ge=0.0, le=10.0, description="Refiner conditioning (SDXL default 6).")
    negative_aesthetic_score: float = Field(2.5, ge=0.0, le=10.0, description="SDXL default 2.5.")
    seed: Seed


class Timings(BaseModel):
    queue_ms: float = 0.0
    inference_ms: float = Field(0.0, description="The pipeline call (shared with the rest of its batch).")
    encode_ms: float = 0.0
    store_ms: float = 0.0


class ImageInfo(BaseModel):
    id: str = Field(description="Image id; GET /download/{id} serves the PNG.")
    seed: int
    width: int
    height: int


class ImageResponse(BaseModel):
    id: str = Field(description="The first image's id (the only one unless num_images > 1).")
    seed: int
    width: int
    height: int
    images: list[ImageInfo] = Field(description="Every image of the request, in seed order.")
    model: str
    parent_id: str | None = None
    job_id: str
    timings: Timings


class Progress(BaseModel):
    step: int = Field(description="Denoising steps done, summed over the job's images.")
    total: int


class JobError(BaseModel):
    type: str
    message: str


class JobResponse(BaseModel):
    id: str
    kind: Literal["generate", "refine"]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    model: str
    queue_position: int | None = Field(description="Images queued ahead of this job; null once it runs.")
    progress: Progress
    created: float
    started: float | None
    finished: float | None
    timings: Timings
    images: list[ImageInfo]
    parent_id: str | None
    error: JobError | None


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorInfo(BaseModel):
    type: str
    message: str
    field: str | None = None
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    error: ErrorInfo


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    status: str
    model: str
    device: str
