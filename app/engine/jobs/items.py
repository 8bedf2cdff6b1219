"""What a job asks for, one item per image: the parameters of a generate, img2img, inpaint or refine call.

Built from requests under the configured limits by `params.py`; run on the GPU owner by `gpu/pipelines.py`.
Frozen: an item never changes after it is queued.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from PIL import Image


@dataclass(frozen=True)
class Setup:
    """What a pipeline call is built from, besides the images' own parameters. Part of the batch key."""

    model: str
    scheduler: str | None = None  # a samplers.py name; None: the model's own scheduler
    vae: str | None = None  # a registry VAE replacing the model's for this call
    loras: tuple[tuple[str, float], ...] = ()  # (name, scale), sorted by name


@dataclass(frozen=True)
class Control:
    name: str
    image: Image.Image
    scale: float


@dataclass(frozen=True)
class GenerateParams:
    prompt: str
    negative_prompt: str | None
    prompt_2: str | None
    negative_prompt_2: str | None
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    setup: Setup
    kind: str = "generate"  # "generate" | "img2img" | "inpaint"
    image: Image.Image | None = None  # img2img / inpaint input, already at width x height
    mask: Image.Image | None = None  # inpaint: white = repaint
    strength: float | None = None  # img2img / inpaint
    control: Control | None = None
    high_noise_frac: float | None = None  # ensemble refine: where the base hands over to the refiner
    parent_id: str | None = None

    @property
    def steps_run(self) -> int:
        if self.strength is not None and self.strength < 1.0:
            return int(self.steps * self.strength)  # what diffusers' img2img / inpaint actually run
        return self.steps


@dataclass(frozen=True)
class RefineParams:
    prompt: str
    negative_prompt: str | None
    strength: float
    steps: int
    guidance: float
    aesthetic_score: float
    negative_aesthetic_score: float
    seed: int
    image: Image.Image | None  # the stored image being refined, decoded; None once its job ended (released)
    size: tuple[int, int] = (0, 0)  # the image's (set from it), kept when the image is released

    def __post_init__(self) -> None:
        if self.image is not None:
            object.__setattr__(self, "size", self.image.size)

    @property
    def steps_run(self) -> int:
        return int(self.steps * self.strength)  # what diffusers' img2img actually runs


def released(p: GenerateParams | RefineParams) -> GenerateParams | RefineParams:
    """`p` without its decoded images (input, mask, control image, refine source), for a job that has ended: it is
    kept to be read for job_ttl_s (up to 10,000 jobs), and one 2048² input is 12 MiB."""
    if isinstance(p, RefineParams):
        return p if p.image is None else replace(p, image=None)
    if p.image is None and p.mask is None and p.control is None:
        return p
    return replace(p, image=None, mask=None, control=None)


def batch_key(p: GenerateParams) -> tuple[Any, ...] | None:
    """What must be equal for two images to share one pipeline call; None: never batched.

    Whether a negative prompt was given is part of it: SDXL uses zero embeddings for a missing negative
    prompt but encodes "" for an empty one, so mixing the two would change pictures. Calls with an input
    image or a control image run alone.
    """
    if p.kind != "generate" or p.control is not None:
        return None
    return (p.setup, p.width, p.height, p.steps, p.guidance, p.negative_prompt is None, p.high_noise_frac)
