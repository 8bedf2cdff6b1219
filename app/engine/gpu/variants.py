"""Which weights variant a load asks for, and the fallback to a source's regular files.

A variant is a property of the source (the SDXL repos publish `*.fp16.safetensors` beside their float32 files;
the fp16-fix VAE and the Animagine repos do not), so registry entries carry it; SDXL_VARIANT may override it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from app.config import Settings
from app.errors import is_out_of_memory

logger = logging.getLogger(__name__)

HALF_PRECISION = ("float16", "bfloat16")
T = TypeVar("T")


def variant_for(variant: str | None, source: str, settings: Settings, dtype_name: str) -> str | None:
    """SDXL_VARIANT when set ('none': never one), else the entry's own, and that only in half precision: fp16
    files loaded into float32 would halve the weights' precision for nothing."""
    if source.startswith("tiny:"):  # built here, without variant files
        return None
    if settings.variant is not None:
        return None if settings.variant == "none" else settings.variant
    return variant if dtype_name in HALF_PRECISION else None


def _variant_missing(exc: BaseException, variant: str) -> bool:
    """diffusers names the missing file (`diffusion_pytorch_model.fp16.safetensors`: a model) or the variant
    (`variant=fp16`: a pipeline without a single file of it)."""
    text = str(exc)
    return f".{variant}." in text or f"variant={variant}" in text


def with_variant_fallback(call: Callable[[str | None], T], variant: str | None, label: str) -> T:
    """`call(variant)`, then once `call(None)` when the source has no files of that variant, so a source with
    regular files only still loads. Never after running out of memory: a second try would only fail again."""
    try:
        return call(variant)
    except Exception as exc:
        if variant is None or is_out_of_memory(exc) or not _variant_missing(exc, variant):
            raise
        logger.info("%s has no %s files; using its regular files", label, variant)
    return call(None)
