"""Loading the base and refiner pipelines, on whatever device the settings resolve to.

Every model, the built-in tiny one included, goes through the same `from_pretrained` call as real SDXL
weights. torch and diffusers are imported inside the functions so that importing the service stays cheap.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from app.config import TINY, Settings
from app.errors import ModelLoadError

logger = logging.getLogger(__name__)

OFFLINE_HINT = "without network access to the model hub, run the built-in offline model with SDXL_MODEL=tiny"


@dataclass(frozen=True)
class Placement:
    device: str
    dtype_name: str

    @property
    def dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype_name)


def resolve_placement(settings: Settings) -> Placement:
    import torch

    device = settings.device
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    dtype = settings.dtype
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "float16"
    return Placement(device, dtype)


def _source(name: str, role: str, settings: Settings) -> str:
    if name != TINY:
        return name
    from app.engine.tiny import ensure_tiny_models

    paths = ensure_tiny_models(settings.cache_dir)
    return str(paths.base if role == "base" else paths.refiner)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _load(cls: Any, name: str, role: str, settings: Settings, placement: Placement, **components: Any) -> Any:
    started = time.perf_counter()
    source = _source(name, role, settings)
    variant = None if name == TINY else settings.variant
    try:
        pipe = cls.from_pretrained(source, dtype=placement.dtype, variant=variant, add_watermarker=False, **components)
        pipe.to(placement.device)
    except Exception as exc:
        logger.debug("loading %s failed", source, exc_info=True)
        raise ModelLoadError(f"could not load the {role} model {name!r} ({_one_line(exc)}); {OFFLINE_HINT}") from exc
    pipe.set_progress_bar_config(disable=True)
    logger.info(
        "loaded %s model %r on %s/%s in %.2fs",
        role,
        name,
        placement.device,
        placement.dtype_name,
        time.perf_counter() - started,
    )
    return pipe


def load_base(settings: Settings, placement: Placement) -> Any:
    from diffusers import StableDiffusionXLPipeline

    return _load(StableDiffusionXLPipeline, settings.model, "base", settings, placement)


def load_refiner(settings: Settings, placement: Placement, base: Any) -> Any:
    """The refiner borrows the base's second text encoder and VAE: the same objects, no second copy."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    return _load(
        StableDiffusionXLImg2ImgPipeline,
        settings.refiner,
        "refiner",
        settings,
        placement,
        text_encoder_2=base.text_encoder_2,
        vae=base.vae,
    )
