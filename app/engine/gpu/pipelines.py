"""The pipeline calls themselves, for the items of `jobs/items.py`. They run on the GPU owner's thread only.

Per-request settings travel as arguments; a shared pipeline is never mutated for one request (a named
scheduler or VAE goes into a light per-call pipeline built from the shared modules, see `with_components`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from PIL import Image

from app.engine.jobs.items import GenerateParams, RefineParams


def _generator(seed: int) -> Any:
    import torch

    # A CPU generator makes a seed mean the same picture on any device.
    return torch.Generator(device="cpu").manual_seed(seed)


def _step_callback(on_step: Callable[[], None]) -> Callable[..., dict[str, Any]]:
    """`on_step` once per denoising step. diffusers calls back once per scheduler timestep, and a second-order
    scheduler (Heun, `order` 2) has two per step but the first (2N - 1 for N steps): counted as steps here."""
    reported = 0

    def callback(pipe: Any, step: int, _timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        nonlocal reported
        order = getattr(pipe.scheduler, "order", 1)
        while reported < -(-(step + 1) // order):  # ceil((step + 1) / order)
            reported += 1
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
    pipe: Any,
    batch: list[GenerateParams],
    on_step: Callable[[], None],
    refiner: Any = None,
    switch: Callable[[], None] | None = None,
) -> list[Image.Image]:
    """One call for the whole batch: a prompt list and one seeded generator per image.

    `pipe` is already the right pipeline for the batch's kind (text-to-image, img2img, inpaint, ControlNet).
    With `high_noise_frac` the base stops there and hands its latents to `refiner` (ensemble of experts);
    `switch`, if given, runs in between (on a small card it swaps the base's UNet for the refiner's).
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
    if switch is not None:
        switch()
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
