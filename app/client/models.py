"""What the client returns. The service's own response models (app.schemas, pydantic only) are the contract;
only what the service has no model for yet, or answers outside JSON, is declared here.

Response models ignore fields they do not know, so a newer server does not break an older client.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from app.schemas import (
    HealthResponse,
    ImageInfo,
    ImageResponse,
    ImagesPage,
    JobResponse,
    ReadyResponse,
    StoredImageInfo,
    Timings,
)

__all__ = [
    "TERMINAL_STATUSES",
    "HealthResponse",
    "ImageInfo",
    "ImageResponse",
    "ImagesPage",
    "JobResponse",
    "ModelDefaults",
    "ModelInfo",
    "ModelsResponse",
    "PngImage",
    "ReadyResponse",
    "StoredImageInfo",
    "Timings",
    "is_terminal",
]

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


def is_terminal(job: JobResponse) -> bool:
    return job.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class PngImage:
    """`generate_png`'s answer: the PNG itself, with the id and seed the service sent in headers."""

    png: bytes
    id: str
    seed: int


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class ModelDefaults(_Tolerant):
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float


class ModelInfo(_Tolerant):
    name: str
    source: str
    loaded: bool
    # "device", "cpu", "disk", "not_downloaded", "not_built" or "missing"; a plain str so that a new place does not
    # break old clients
    location: str
    pinned: bool = False
    bytes: int | None = None
    hits: int = 0
    misses: int = 0
    last_used: float | None = None
    defaults: ModelDefaults | None = None


class ModelsResponse(_Tolerant):
    """GET /models: the served models and the add-ons a request may name."""

    default: str
    models: list[ModelInfo]
    loras: list[str] = []
    vaes: list[str] = []
    controlnets: list[str] = []
    schedulers: list[str] = []
