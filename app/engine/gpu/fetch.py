"""Making the refiner's files local at startup, without loading it.

The refiner loads on first use, from local files only (loader.load_refiner): a request must never make the GPU
owner download ~4.5 GB while the queue times out. So its files are made local here, at startup after the default
model, the way the base's are: built (tiny), checked (a directory) or fetched (a hub id).
"""

from __future__ import annotations

import logging
import os
import time

from app.config import Settings
from app.engine.gpu.loader import REFINER_HINT, failure_hint, load_error, resolve_source
from app.engine.gpu.variants import variant_for, with_variant_fallback
from app.engine.models.registry import HUB_ID, ExtraEntry

logger = logging.getLogger(__name__)


def resolve_refiner(entry: ExtraEntry, settings: Settings, dtype_name: str) -> str:
    """Where the refiner's files are, once they are on this machine; raises ModelLoadError."""
    started = time.perf_counter()
    variant = variant_for(entry.variant, entry.source, settings, dtype_name)
    try:
        where = _local_files(entry.source, settings, variant)
    except Exception as exc:
        logger.debug("resolving the refiner %s failed", entry.source, exc_info=True)
        hint = failure_hint(exc, entry.source.startswith("tiny:"), REFINER_HINT)
        raise load_error(f"the refiner {entry.name!r} is not on this machine", exc, hint) from exc
    logger.info("refiner %r is on local disk (%.2fs); it loads on first use", entry.name, time.perf_counter() - started)
    return where


def _local_files(source: str, settings: Settings, variant: str | None) -> str:
    if source.startswith("tiny:"):
        return resolve_source(source, settings)
    if os.path.isdir(source):  # diffusers' own test: a directory wins over a hub id of the same spelling
        return source
    if not HUB_ID.fullmatch(source):
        raise FileNotFoundError(f"no directory {source}")
    from diffusers import StableDiffusionXLImg2ImgPipeline

    def download(variant: str | None) -> str:
        # The files the load reads, the same way: a component passed (None here, the base's own at load time) is
        # one diffusers neither fetches nor expects on disk, so the refiner's copies of the borrowed
        # text_encoder_2 and VAE (~1.5 GB) are never fetched.
        return str(
            StableDiffusionXLImg2ImgPipeline.download(
                source, variant=variant, use_safetensors=True, text_encoder_2=None, vae=None
            )
        )

    return with_variant_fallback(download, variant, f"the refiner {source!r}")
