"""What GET /models shows: every registry entry with where it lives now, and what a request may name."""

from __future__ import annotations

from typing import Any

from app.config import Settings
from app.engine.gpu.memory import Memory
from app.engine.gpu.model_cache import PipelineCache
from app.engine.models import samplers
from app.engine.models.local_files import where_on_disk
from app.engine.models.registry import Registry


def models_info(
    registry: Registry,
    cache: PipelineCache,
    settings: Settings,
    device: str,
    order: list[str],
    memory: Memory | None = None,
    warmup: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read on the event loop while the owner may change the cache: each value read is one the owner replaces
    whole, so a snapshot may be a step behind but is never torn."""
    models = []
    for name in order:
        slot = cache.slots[name]
        d = slot.entry.defaults
        models.append(
            {
                "name": name,
                "source": slot.entry.source,
                "description": slot.entry.description,
                "family": slot.entry.family,
                "pinned": slot.pinned,
                "loaded": slot.location != "disk",
                # Not loaded: whether its weights are on this machine at all (not_downloaded, not_built, missing).
                "location": slot.location if slot.location != "disk" else where_on_disk(slot.entry.source, settings),
                "bytes": slot.bytes,
                "hits": slot.hits,
                "misses": slot.misses,
                "loads": slot.loads,
                "last_used": slot.last_used,
                "defaults": {
                    "width": d.size,
                    "height": d.size,
                    "num_inference_steps": d.steps,
                    "guidance_scale": d.guidance,
                    "scheduler": d.scheduler,
                    "max_steps": min(settings.max_steps, d.max_steps or settings.max_steps),
                },
            }
        )
    return {
        "default": registry.default,
        "device": device,
        "models": models,
        "loras": sorted(registry.loras),
        "vaes": sorted(registry.vaes),
        "controlnets": sorted(registry.controlnets),
        "schedulers": list(samplers.SAMPLERS),
        "budget": {
            "max_models": cache.max_models,
            "max_bytes": cache.max_bytes,
            "cpu_tier": cache.cpu_tier,
            "device_bytes": cache.device_bytes,
        },
        "memory": {
            "budget_bytes": memory.budget if memory else None,
            "mode": memory.mode if memory else None,
            "reason": memory.reason if memory else None,
            "base_bytes": memory.base_bytes if memory else None,
            "vae_upcast": memory.upcast_vae if memory else None,
            "warmup": warmup,
        },
    }
