"""Loading pipelines, VAEs and ControlNets, on whatever device the settings resolve to.

Every model, the built-in tiny one included, goes through the same `from_pretrained` call as real SDXL
weights. torch and diffusers are imported inside the functions so that importing the service stays cheap.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from app.config import TINY, Settings
from app.engine.registry import ExtraEntry, ModelEntry
from app.errors import ModelLoadError

logger = logging.getLogger(__name__)

OFFLINE_HINT = "without network access to the model hub, run the built-in offline model with SDXL_MODEL=tiny"
LOCAL_ONLY_HINT = (
    "requests may only use weights already in the hub cache or a directory; the operator can fetch them, or set "
    "SDXL_DOWNLOAD_MODELS=true"
)


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


def resolve_source(source: str, settings: Settings) -> str:
    """A registry source as `from_pretrained` takes it; "tiny:<part>" is built locally on first use."""
    if not source.startswith("tiny:"):
        return source
    from app.engine.tiny import ensure_tiny_models

    paths = ensure_tiny_models(settings.cache_dir)
    part = source.removeprefix("tiny:").replace("-", "_")
    return str(getattr(paths, part))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _load(
    cls: Any,
    name: str,
    source: str,
    role: str,
    settings: Settings,
    placement: Placement,
    local_only: bool = False,
    **kw: Any,
) -> Any:
    started = time.perf_counter()
    path = resolve_source(source, settings)
    variant = None if source.startswith("tiny:") else settings.variant
    try:
        loaded = cls.from_pretrained(path, dtype=placement.dtype, variant=variant, local_files_only=local_only, **kw)
        loaded.to(placement.device)
    except Exception as exc:
        logger.debug("loading %s failed", path, exc_info=True)
        hint = LOCAL_ONLY_HINT if local_only else OFFLINE_HINT
        raise ModelLoadError(f"could not load the {role} {name!r} ({_one_line(exc)}); {hint}") from exc
    if hasattr(loaded, "set_progress_bar_config"):
        loaded.set_progress_bar_config(disable=True)
    logger.info(
        "loaded %s %r on %s/%s in %.2fs",
        role,
        name,
        placement.device,
        placement.dtype_name,
        time.perf_counter() - started,
    )
    return loaded


def load_model(
    entry: ModelEntry, settings: Settings, placement: Placement, vae: Any = None, local_only: bool = False
) -> Any:
    """A text-to-image pipeline for a registry entry; `vae` (a loaded module) replaces the model's own."""
    from diffusers import StableDiffusionXLPipeline

    components = {"vae": vae} if vae is not None else {}
    return _load(
        StableDiffusionXLPipeline,
        entry.name,
        entry.source,
        "model",
        settings,
        placement,
        local_only,
        add_watermarker=False,
        **components,
    )


def load_vae(entry: ExtraEntry, settings: Settings, placement: Placement, local_only: bool = False) -> Any:
    from diffusers import AutoencoderKL

    return _load(AutoencoderKL, entry.name, entry.source, "VAE", settings, placement, local_only)


def load_controlnet(entry: ExtraEntry, settings: Settings, placement: Placement, local_only: bool = False) -> Any:
    from diffusers import ControlNetModel

    return _load(ControlNetModel, entry.name, entry.source, "ControlNet", settings, placement, local_only)


def load_refiner(settings: Settings, placement: Placement, base: Any) -> Any:
    """The refiner borrows the base's second text encoder and VAE: the same objects, no second copy."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    source = "tiny:refiner" if settings.refiner == TINY else settings.refiner
    return _load(
        StableDiffusionXLImg2ImgPipeline,
        settings.refiner,
        source,
        "refiner",
        settings,
        placement,
        add_watermarker=False,
        text_encoder_2=base.text_encoder_2,
        vae=base.vae,
    )
