"""Whether a model that is not loaded has its weights on this machine: what /models' `location` says for it.

"disk" alone used to cover a hub model that was never downloaded, so `sdxl-serve models` could not tell what a
request for it would meet (with SDXL_DOWNLOAD_MODELS off: a 503). Only the file system is read (no network): a hub
model counts as downloaded when the hub cache holds its model_index.json and its UNet's weights.
"""

from __future__ import annotations

import os
from pathlib import Path

from app.config import Settings
from app.engine.models.registry import HUB_ID

DISK = "disk"
NOT_DOWNLOADED = "not_downloaded"  # a hub id whose weights are not in the hub cache
NOT_BUILT = "not_built"  # a built-in tiny model, built on first use (seconds, offline)
MISSING = "missing"  # a directory that does not exist


def where_on_disk(source: str, settings: Settings, hub_cache: str | Path | None = None) -> str:
    """DISK, NOT_DOWNLOADED, NOT_BUILT or MISSING; `hub_cache`: the hub cache to read (default: the hub's own)."""
    if source.startswith("tiny:"):
        from app.engine.models.tiny.build import is_built

        return DISK if is_built(settings.cache_dir) else NOT_BUILT
    if os.path.isdir(source):  # as the loader decides: a directory wins over a hub id of the same spelling
        return DISK
    if not HUB_ID.fullmatch(source):
        return MISSING
    from huggingface_hub import try_to_load_from_cache

    index = try_to_load_from_cache(source, "model_index.json", cache_dir=hub_cache)
    if not isinstance(index, str):  # None (never fetched) or the hub's "known not to exist" marker
        return NOT_DOWNLOADED
    return DISK if any((Path(index).parent / "unet").glob("*.safetensors")) else NOT_DOWNLOADED
