"""The API contract: request and response models, with every limit declared next to its field.

These limits are the hard ceilings (they show in /docs). Settings may lower some of them (SDXL_MAX_SIDE,
SDXL_MAX_PIXELS, SDXL_MAX_STEPS); the engine checks those and answers 422 the same way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from app import schema_examples as examples
from app.config import MAX_SIDE, MAX_STEPS
from app.storage.ids import ID_PATTERN

MAX_PROMPT_CHARS = 2000
MAX_SEED = 2**32 - 1
MAX_NUM_IMAGES = 8

Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
OptionalPrompt = Annotated[str | None, Field(None, max_length=MAX_PROMPT_CHARS)]
MIN_SIDE = 256
Side = Annotated[
    int | None,
    Field(
        None,
        ge=MIN_SIDE,
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
    # Unknown fields are an error: a typo such as "steps" must not silently fall back to a default. Strict: a
    # number is a JSON number ("width": "256", "num_images": true and "seed": 1.0 are 422, not coerced); an integer
    # is still accepted where a float is asked for.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, strict=True)

    @field_validator("prompt", check_fields=False)
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must contain a non-whitespace character")
        return value


# Registry names (models, VAEs, ControlNets, LoRAs, schedulers): checked against the registry by the engine,
# which answers 422 listing the choices. Hub ids (a default model given as SDXL_MODEL) may contain "/".
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/+ -]*$")]
# Base64 images: bounded by the upload body limit (SDXL_MAX_UPLOAD_BYTES) before this is ever parsed.
Base64Image = Annotated[str, Field(min_length=1, description="Base64 PNG, JPEG or WebP (a data: URL prefix is fine).")]


class LoraRef(_Request):
    name: Name = Field(description="A LoRA from GET /models (`loras`).")
    scale: float = Field(1.0, ge=-4.0, le=4.0, description="Adapter weight; 0 leaves the model unchanged.")


class ControlNetRef(_Request):
    name: Name = Field(description="A ControlNet from GET /models (`controlnets`).")
    image: Base64Image = Field(
        description="The control image (base64), resized to the output size.", examples=[examples.IMAGE_PNG_B64]
    )
    conditioning_scale: float = Field(1.0, ge=0.0, le=2.0)


class EnsembleRefine(_Request):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.ENSEMBLE]})

    mode: Literal["ensemble"] = Field(description="Ensemble of experts: the refiner finishes the base's denoising.")
    high_noise_frac: float = Field(0.8, gt=0.0, lt=1.0, description="Where the base hands over to the refiner.")


class PictureRequest(_Request):
    """What every image-making request shares."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    prompt: Prompt = Field(description="What to draw.", examples=["a lighthouse at dusk, oil painting"])
    negative_prompt: OptionalPrompt
    prompt_2: OptionalPrompt = Field(None, description="Prompt for the second text encoder; default: prompt.")
    negative_prompt_2: OptionalPrompt
    num_inference_steps: Steps
    guidance_scale: Guidance
    seed: Seed
    model: Name | None = Field(
        None,
        validation_alias=AliasChoices("model", "model_type"),
        description="A model from GET /models (`model_type` is accepted too); default: the default model.",
    )
    scheduler: Name | None = Field(
        None,
        description="euler, euler_a, heun, dpmpp_2m, dpmpp_2m_karras, ddim, unipc, or lcm (few-step models: "
        "LCM-distilled, or with an LCM LoRA; guidance 0 to 2, default 1).",
    )
    loras: list[LoraRef] = Field(default_factory=list, max_length=4, description="LoRAs for this request only.")
    vae: Name | None = Field(None, description="A VAE from GET /models (`vaes`) for this request.")


class GenerateRequest(PictureRequest):
    # Each request model's example runs as it is on any served model: /docs' "Try it out" starts from it.
    model_config = ConfigDict(json_schema_extra={"examples": [examples.GENERATE]})

    width: Side
    height: Side
    num_images: int = Field(
        1, ge=1, le=MAX_NUM_IMAGES, description=f"1..{MAX_NUM_IMAGES} images; image i uses seed + i."
    )
    controlnet: ControlNetRef | None = None
    refine: EnsembleRefine | None = Field(
        None, description="Finish with the refiner (ensemble of experts; the default model only)."
    )


class Img2ImgRequest(PictureRequest):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.IMG2IMG]})

    image: Base64Image | None = Field(None, description="The input image, base64; or give `image_id`.")
    image_id: str | None = Field(None, pattern=ID_PATTERN, description="A stored image as input; or give `image`.")
    strength: float = Field(
        0.75, gt=0.0, le=1.0, description="How much of the input to re-noise; steps run = int(steps * strength)."
    )
    width: Side = Field(None, description="Output width; default: the input's, rounded down to a multiple of 8.")
    height: Side = Field(None, description="Output height; default: the input's, rounded down to a multiple of 8.")
    num_images: int = Field(1, ge=1, le=MAX_NUM_IMAGES, description="Image i uses seed + i.")

    @model_validator(mode="after")
    def _one_image(self) -> Img2ImgRequest:
        _exactly_one(self.image, self.image_id, "image", "image_id")
        return self


class InpaintRequest(Img2ImgRequest):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.INPAINT]})

    mask: Base64Image | None = Field(None, description="Mask, base64 (white: repaint, black: keep); or `mask_id`.")
    mask_id: str | None = Field(None, pattern=ID_PATTERN, description="A stored image as the mask; or give `mask`.")
    strength: float = Field(0.99, gt=0.0, le=1.0, description="1.0 ignores the masked area's content.")

    @model_validator(mode="after")
    def _one_mask(self) -> InpaintRequest:
        _exactly_one(self.mask, self.mask_id, "mask", "mask_id")
        return self


def _exactly_one(a: object, b: object, name_a: str, name_b: str) -> None:
    if (a is None) == (b is None):
        # Its own error type: the API names the field from `ctx` and does not echo the body (validation.py).
        raise PydanticCustomError(
            "exactly_one",
            "give exactly one of {field} (base64) or {other} (a stored image id)",
            {"field": name_a, "other": name_b},
        )


class RefineRequest(_Request):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.REFINE]})

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


class StoredImageInfo(BaseModel):
    id: str = Field(description="Image id; GET /download/{id} serves the PNG, DELETE /images/{id} removes it.")
    created: float = Field(description="When the store wrote it, seconds since the epoch (S3: whole seconds).")
    size: int = Field(description="The PNG's size in bytes.")
    provenance: dict[str, Any] | None = Field(
        description="The record inside the PNG: kind, model, prompt, seed, steps, size, scheduler, parent_id, loras, "
        "... (everything needed to make it again); null for a PNG without one."
    )


class ImagesPage(BaseModel):
    images: list[StoredImageInfo] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class Progress(BaseModel):
    step: int = Field(description="Denoising steps done, summed over the job's images.")
    total: int


class JobError(BaseModel):
    type: str
    message: str


class ReplicaInfo(BaseModel):
    id: str = Field(description="The replica that runs the job: its SDXL_NODE_ID, else its host name.")
    instance: str = Field(
        description="The process that runs it. A restarted replica keeps its id and gets a new instance: the old "
        "one's unfinished jobs read failed (replica_lost)."
    )
    alive: bool | None = Field(
        description="Whether that process still renews its lease (SDXL_REPLICA_LEASE_S); null once the job ended "
        "(not asked), or when the store did not answer."
    )


class JobResponse(BaseModel):
    id: str
    kind: Literal["generate", "refine", "img2img", "inpaint"]
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
    replica: ReplicaInfo | None = Field(
        None, description="Where the job runs; null for a job recorded by a version without replica leases."
    )


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


class ModelDefaultsInfo(BaseModel):
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    scheduler: str | None
    max_steps: int


class ModelInfo(BaseModel):
    name: str
    source: str = Field(description="Hub id or directory the weights come from.")
    description: str
    family: str = Field(description="sdxl or tiny; LoRAs, VAEs and ControlNets fit models of their family.")
    pinned: bool = Field(description="The default model: loaded at startup, never evicted.")
    loaded: bool
    location: Literal["device", "cpu", "disk", "not_downloaded", "not_built", "missing"] = Field(
        description="Where the weights are now: loaded on the device or parked in CPU memory; else on this machine's "
        "disk, or not_downloaded (a hub model not in the hub cache: a request for it fetches it only with "
        "SDXL_DOWNLOAD_MODELS=true), not_built (a tiny model, built on first use) or missing (no such directory)."
    )
    bytes: int | None = Field(description="Bytes of its weights once loaded (shared modules count once).")
    hits: int = Field(description="Requests that found it on the device.")
    misses: int = Field(description="Requests that had to load it or bring it back from the CPU tier.")
    loads: int = Field(description="Loads from disk.")
    last_used: float | None = Field(description="Unix time of its last use.")
    defaults: ModelDefaultsInfo


class ModelsResponse(BaseModel):
    default: str
    device: str
    models: list[ModelInfo]
    loras: list[str]
    vaes: list[str]
    controlnets: list[str]
    schedulers: list[str]
    budget: dict[str, int] = Field(description="max_models, max_bytes (0: none), cpu_tier, device_bytes.")
    memory: DeviceMemory


class Warmup(BaseModel):
    seconds: float
    peak_bytes: int | None = Field(description="Peak device memory of the warm-up calls (CUDA only).")
    calls: list[str]
    compiled_graphs: dict[str, int] | None = Field(
        None,
        description="Graphs torch.compile built during the warm-up, by part (unet, vae_decoder; "
        "SDXL_TORCH_COMPILE); null when off.",
    )


class DeviceMemory(BaseModel):
    """The card as measured at startup, and how the models share it (gpu/memory.py)."""

    budget_bytes: int | None = Field(
        description="Device memory the service may use (SDXL_GPU_MEMORY_GB, else 95% of CUDA's free memory at "
        "startup); null on CPU/MPS: nothing is refused for memory."
    )
    mode: str | None = Field(description="resident: base and refiner stay on the device; swap: their UNets take turns.")
    reason: str | None = Field(description="Why this mode: the sizes it was chosen from.")
    base_bytes: int | None = Field(description="The default model's weights as loaded.")
    vae_upcast: bool | None = Field(description="The default VAE decodes in float32 (force_upcast in half precision).")
    warmup: Warmup | None = Field(
        description="The startup warm-up (SDXL_WARMUP; on CUDA or with SDXL_TORCH_COMPILE by default)."
    )
