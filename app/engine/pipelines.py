"""Per-image parameters and the pipeline calls themselves. The calls run on the GPU owner's thread only.

Per-request settings travel as arguments; a shared pipeline is never mutated for one request (a named
scheduler or VAE goes into a light per-call pipeline built from the shared modules, see `with_components`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
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
    image: Image.Image  # the stored image being refined, decoded

    @property
    def steps_run(self) -> int:
        return int(self.steps * self.strength)  # what diffusers' img2img actually runs


def batch_key(p: GenerateParams) -> tuple[Any, ...] | None:
    """What must be equal for two images to share one pipeline call; None: never batched.

    Whether a negative prompt was given is part of it: SDXL uses zero embeddings for a missing negative
    prompt but encodes "" for an empty one, so mixing the two would change pictures. Calls with an input
    image or a control image run alone.
    """
    if p.kind != "generate" or p.control is not None:
        return None
    return (p.setup, p.width, p.height, p.steps, p.guidance, p.negative_prompt is None, p.high_noise_frac)


def _generator(seed: int) -> Any:
    import torch

    # A CPU generator makes a seed mean the same picture on any device.
    return torch.Generator(device="cpu").manual_seed(seed)


def _step_callback(on_step: Callable[[], None]) -> Callable[..., dict[str, Any]]:
    def callback(_pipe: Any, _step: int, _timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        on_step()  # may raise to interrupt the call (every job in the batch was cancelled)
        return kwargs

    return callback


def with_components(pipe: Any, **overrides: Any) -> Any:
    """A pipeline of the same class sharing `pipe`'s modules, with some replaced (about 1 ms; no weights move).

    diffusers' `from_pipe` does the same but also re-checks every module's device and dtype (~27 ms here),
    which is paid once per model and kind (see runner.py), not per call.
    """
    if not overrides:
        return pipe
    cls = type(pipe)
    accepted = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {**pipe.components}
    kwargs.update({k: v for k, v in pipe.config.items() if k in accepted and k not in kwargs})
    kwargs.update(overrides)
    if "add_watermarker" in accepted:
        kwargs["add_watermarker"] = False  # we watermark the final image ourselves
    view = cls(**kwargs)
    view.set_progress_bar_config(disable=True)
    return view


def _prompts(batch: list[GenerateParams]) -> dict[str, Any]:
    p = batch[0]
    negative = None if p.negative_prompt is None else [b.negative_prompt or "" for b in batch]
    negative_2 = None if negative is None else [b.negative_prompt_2 or b.negative_prompt or "" for b in batch]
    return {
        "prompt": [b.prompt for b in batch],
        "prompt_2": [b.prompt_2 or b.prompt for b in batch],
        "negative_prompt": negative,
        "negative_prompt_2": negative_2,
    }


def run_generate(
    pipe: Any, batch: list[GenerateParams], on_step: Callable[[], None], refiner: Any = None
) -> list[Image.Image]:
    """One call for the whole batch: a prompt list and one seeded generator per image.

    `pipe` is already the right pipeline for the batch's kind (text-to-image, img2img, inpaint, ControlNet).
    With `high_noise_frac` the base stops there and hands its latents to `refiner` (ensemble of experts).
    """
    p = batch[0]
    kwargs: dict[str, Any] = {
        **_prompts(batch),
        "width": p.width,
        "height": p.height,
        "num_inference_steps": p.steps,
        "guidance_scale": p.guidance,
        "generator": [_generator(b.seed) for b in batch],
        "callback_on_step_end": _step_callback(on_step),
        "output_type": "pil",
    }
    if p.image is not None:
        kwargs.update(image=p.image, strength=p.strength)
    if p.mask is not None:
        kwargs["mask_image"] = p.mask
    if p.control is not None:
        kwargs.update(image=p.control.image, controlnet_conditioning_scale=p.control.scale)
    if p.high_noise_frac is None:
        images: list[Image.Image] = pipe(**kwargs).images
        if p.mask is not None and p.image is not None:
            # The VAE round trip alters every pixel a little; what the mask keeps must stay exactly as sent.
            images = [Image.composite(out, p.image, p.mask) for out in images]
        return images
    kwargs.update(denoising_end=p.high_noise_frac, output_type="latent")
    latents = pipe(**kwargs).images
    refined: list[Image.Image] = refiner(
        # The refiner's one encoder is text_encoder_2, which diffusers feeds `prompt`: give it what the base's
        # text_encoder_2 read.
        prompt=kwargs["prompt_2"],
        negative_prompt=kwargs["negative_prompt_2"],
        image=latents,
        num_inference_steps=p.steps,
        denoising_start=p.high_noise_frac,
        guidance_scale=p.guidance,
        generator=[_generator(b.seed) for b in batch],
        callback_on_step_end=_step_callback(on_step),
        output_type="pil",
    ).images
    return refined


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
