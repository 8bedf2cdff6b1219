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

from app.engine.registry import ExtraEntry
from app.errors import InvalidRequest

logger = logging.getLogger(__name__)

MAX_LOADED = 8


def adapter_name(lora: str) -> str:
    # PEFT adapter names become module keys, where "." is not allowed; hex keeps distinct names distinct.
    return "lora_" + lora.encode().hex()


def apply_loras(pipe: Any, loras: list[tuple[ExtraEntry, float]], resolve: Any) -> None:
    """Make exactly `loras` active on `pipe` for the next call. `resolve(source)` gives a loadable path."""
    loaded = _loaded(pipe)
    if not loras:
        if loaded:
            pipe.disable_lora()
        return
    wanted = [adapter_name(entry.name) for entry, _ in loras]
    stale = [name for name in loaded if name not in wanted]
    if len(loaded) + len(loras) > MAX_LOADED and stale:
        pipe.delete_adapters(stale)
        loaded = [name for name in loaded if name not in stale]
    for index, (entry, _) in enumerate(loras):
        name = adapter_name(entry.name)
        if name not in loaded:
            _load(pipe, entry, name, resolve, f"loras[{index}].name")
    pipe.enable_lora()
    pipe.set_adapters(wanted, adapter_weights=[scale for _, scale in loras])


def _loaded(pipe: Any) -> list[str]:
    if not hasattr(pipe, "get_list_adapters"):
        return []
    names: list[str] = pipe.get_list_adapters().get("unet", [])
    return names


def _load(pipe: Any, entry: ExtraEntry, name: str, resolve: Any, field: str) -> None:
    try:
        pipe.load_lora_weights(resolve(entry.source), weight_name=entry.weight_name, adapter_name=name)
    except Exception as exc:
        logger.warning("LoRA %r could not be applied: %s: %s", entry.name, type(exc).__name__, exc)
        with contextlib.suppress(Exception):  # nothing may have been registered; the load error is what matters
            pipe.delete_adapters([name])
        raise InvalidRequest(
            f"LoRA {entry.name!r} could not be applied to this model ({type(exc).__name__}); "
            "it may be made for another base model",
            field=field,
        ) from exc
