"""The pipeline calls themselves. Everything here runs on the GPU owner's thread only.

Per-request settings travel as arguments; a shared pipeline is never mutated for one request.
"""

from __future__ import annotations

from collections.abc import Callable
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
    image: Image.Image  # the stored image being refined, decoded

    @property
    def steps_run(self) -> int:
        return int(self.steps * self.strength)  # what diffusers' img2img actually runs


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


def _step_callback(on_step: Callable[[], None]) -> Callable[..., dict[str, Any]]:
    def callback(_pipe: Any, _step: int, _timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        on_step()  # may raise to interrupt the call (every job in the batch was cancelled)
        return kwargs

    return callback


def batch_key(p: GenerateParams, model: str, scheduler: str) -> tuple[Any, ...]:
    """What must be equal for two images to share one pipeline call.

    Whether a negative prompt was given is part of it: SDXL uses zero embeddings for a missing negative
    prompt but encodes "" for an empty one, so mixing the two would change pictures.
    """
    return (model, scheduler, p.width, p.height, p.steps, p.guidance, p.negative_prompt is None)


def run_base(pipe: Any, batch: list[GenerateParams], on_step: Callable[[], None]) -> list[Image.Image]:
    """One call for the whole batch: a prompt list and one seeded generator per image."""
    p = batch[0]
    negative = None if p.negative_prompt is None else [b.negative_prompt or "" for b in batch]
    negative_2 = None if negative is None else [b.negative_prompt_2 or b.negative_prompt or "" for b in batch]
    out = pipe(
        prompt=[b.prompt for b in batch],
        prompt_2=[b.prompt_2 or b.prompt for b in batch],
        negative_prompt=negative,
        negative_prompt_2=negative_2,
        width=p.width,
        height=p.height,
        num_inference_steps=p.steps,
        guidance_scale=p.guidance,
        generator=[_generator(b.seed) for b in batch],
        callback_on_step_end=_step_callback(on_step),
        output_type="pil",
    )
    images: list[Image.Image] = out.images
    return images


def run_refiner(pipe: Any, p: RefineParams, on_step: Callable[[], None]) -> Image.Image:
    out = pipe(
        prompt=p.prompt,
        negative_prompt=p.negative_prompt,
        image=p.image,
        strength=p.strength,
        num_inference_steps=p.steps,
        guidance_scale=p.guidance,
        aesthetic_score=p.aesthetic_score,
        negative_aesthetic_score=p.negative_aesthetic_score,
        generator=_generator(p.seed),
        callback_on_step_end=_step_callback(on_step),
        output_type="pil",
    )
    refined: Image.Image = out.images[0]
    return refined
