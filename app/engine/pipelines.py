"""The pipeline calls themselves. Everything here runs on the GPU owner's thread only.

Per-request settings travel as arguments; a shared pipeline is never mutated for one request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image


@dataclass(frozen=True)
class ModelDefaults:
    size: int
    steps: int
    guidance: float
    refine_steps: int
    scheduler: str


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


def model_defaults(pipe: Any, *, tiny: bool) -> ModelDefaults:
    # SDXL's native size is its UNet's sample size in latent pixels times the VAE's scale (128 * 8 = 1024).
    size = int(pipe.unet.config.sample_size * pipe.vae_scale_factor)
    return ModelDefaults(
        size=size,
        steps=4 if tiny else 30,
        guidance=5.0,
        refine_steps=10 if tiny else 30,
        scheduler=type(pipe.scheduler).__name__,
    )


def _generator(seed: int) -> Any:
    import torch

    # A CPU generator makes a seed mean the same picture on any device.
    return torch.Generator(device="cpu").manual_seed(seed)


def run_base(pipe: Any, p: GenerateParams) -> Image.Image:
    out = pipe(
        prompt=p.prompt,
        prompt_2=p.prompt_2,
        negative_prompt=p.negative_prompt,
        negative_prompt_2=p.negative_prompt_2,
        width=p.width,
        height=p.height,
        num_inference_steps=p.steps,
        guidance_scale=p.guidance,
        generator=_generator(p.seed),
        output_type="pil",
    )
    image: Image.Image = out.images[0]
    return image


def run_refiner(pipe: Any, p: RefineParams, image: Image.Image) -> Image.Image:
    out = pipe(
        prompt=p.prompt,
        negative_prompt=p.negative_prompt,
        image=image,
        strength=p.strength,
        num_inference_steps=p.steps,
        guidance_scale=p.guidance,
        aesthetic_score=p.aesthetic_score,
        negative_aesthetic_score=p.negative_aesthetic_score,
        generator=_generator(p.seed),
        output_type="pil",
    )
    refined: Image.Image = out.images[0]
    return refined
