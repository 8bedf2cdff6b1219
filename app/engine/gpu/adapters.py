"""Per-request LoRA on a shared pipeline (GPU owner's thread only).

LoRA weights are loaded once per pipeline as named PEFT adapters and kept (at most `MAX_LOADED` per
pipeline). Each call then selects its adapters and scales, or disables them all, so a request without LoRA
runs the un-adapted UNet exactly: disabled adapters are skipped, not merged and un-merged, and weights are
never fused. Requests with different adapter sets never share a batch (`Setup.loras` is in the batch key).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from app.engine.models.registry import ExtraEntry
from app.errors import InvalidRequest

logger = logging.getLogger(__name__)

MAX_LOADED = 8


def adapter_name(lora: str) -> str:
    # PEFT adapter names become module keys, where "." is not allowed; hex keeps distinct names distinct.
    return "lora_" + lora.encode().hex()


def apply_loras(pipe: Any, loras: list[tuple[ExtraEntry, float]], resolve: Any, unload_idle: bool = False) -> bool:
    """Make exactly `loras` active on `pipe` for the next call. `resolve(source)` gives a loadable path.
    `unload_idle`: a call without LoRA unloads the adapters instead of disabling them (a compiled pipeline: its
    graphs hold only for the layers without PEFT's wrappers, see compiled.py).
    True when adapters were loaded or deleted: the pipeline's size changed."""
    loaded = _loaded(pipe)
    if not loras:
        if loaded and unload_idle:
            pipe.unload_lora_weights()
            return True
        if loaded:
            pipe.disable_lora()
        return False
    changed = False
    wanted = [adapter_name(entry.name) for entry, _ in loras]
    try:
        stale = [name for name in loaded if name not in wanted]
        if len(loaded) + len(loras) > MAX_LOADED and stale:
            pipe.delete_adapters(stale)
            loaded = [name for name in loaded if name not in stale]
            changed = True
        for entry, _ in loras:
            if adapter_name(entry.name) not in loaded:
                pipe.load_lora_weights(
                    resolve(entry.source), weight_name=entry.weight_name, adapter_name=adapter_name(entry.name)
                )
                changed = True
        pipe.enable_lora()
        pipe.set_adapters(wanted, adapter_weights=[scale for _, scale in loras])
    except Exception as exc:
        _refuse(pipe, loras, wanted, exc)
    return changed


def _loaded(pipe: Any) -> list[str]:
    """Adapter names on any component (a LoRA may carry only text-encoder layers)."""
    if not hasattr(pipe, "get_list_adapters"):
        return []
    return sorted({name for names in pipe.get_list_adapters().values() for name in names})


def _refuse(pipe: Any, loras: list[tuple[ExtraEntry, float]], wanted: list[str], exc: Exception) -> None:
    """Leave the pipeline un-adapted and blame the request: a LoRA made for another model is the usual cause."""
    names = ", ".join(repr(entry.name) for entry, _ in loras)
    logger.warning("LoRA %s could not be applied: %s: %s", names, type(exc).__name__, exc)
    fresh = [name for name in wanted if name in _loaded(pipe)]
    with contextlib.suppress(Exception):  # best effort: the original error is what the client needs
        pipe.delete_adapters(fresh)
    with contextlib.suppress(Exception):
        pipe.disable_lora()
    raise InvalidRequest(
        f"LoRA {names} could not be applied to this model ({type(exc).__name__}); it may be made for another "
        "base model",
        field="loras",
    ) from exc
