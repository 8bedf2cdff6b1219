"""What stays on the device, under the card's budget (GPU owner's thread only).

Everything resident is counted: the cached pipelines (with their LoRA adapters), the refiner's own UNet, and the
per-request VAEs and ControlNets. Before each call the owner makes room for what the call uses plus its activations
(gpu/memory.py), taking out first what the call does not use: ControlNets and VAEs, then other models (to the CPU
tier or dropped, least recently used first), then an idle UNet (the refiner's, or the base's while a refine runs),
which is parked in CPU memory and comes back when needed. Then it sets the VAE's slicing and tiling for the call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from app.engine.gpu import memory
from app.engine.gpu.memory import Call, Footprint
from app.engine.gpu.model_cache import free_memory

logger = logging.getLogger(__name__)

GPU_HEADROOM = 0.95  # of the free memory at startup: the rest absorbs the allocator's fragmentation


def measure_budget(gpu_memory_gb: float | None, device: str) -> int | None:
    """Bytes the service may use on the device: the setting, else (CUDA) what is free before anything loads."""
    if gpu_memory_gb is not None:
        return int(gpu_memory_gb * memory.GiB)
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info()
        return int(free * GPU_HEADROOM)
    return None  # CPU / MPS: the memory is shared with everything else; nothing is refused


def choose_mode(forced: str, budget: int | None, base: int, fp: Footprint, call: Call) -> tuple[str, str]:
    """RESIDENT when base, refiner and one default-size call fit together, else SWAP; with the reason, for the log."""
    refiner = fp.refiner_unet_params * call.dtype_bytes
    if budget is None:
        return forced if forced != "auto" else memory.RESIDENT, "no device budget (CPU or MPS): nothing is moved"
    # Untiled: a card that could hold both UNets only by tiling every default-size decode is better off swapping
    # them for a refine (tiles cost time and can show seams on every image).
    need = memory.activations(fp, call, memory.Decode(sliced=False, tiled=False))
    together = base + refiner + need
    fit = "fit" if together <= budget else "do not fit"
    reason = (
        f"base {memory.gib(base)} + refiner UNet {memory.gib(refiner)} + a {call.width}x{call.height} call "
        f"{memory.gib(need)} = {memory.gib(together)} {fit} in {memory.gib(budget)}"
    )
    if forced != "auto":
        return forced, f"{reason}; SDXL_MEMORY_MODE={forced}"
    return (memory.RESIDENT if together <= budget else memory.SWAP), reason


class Parking:
    """UNets moved to CPU memory while idle, so a refine fits beside the base on a small card (SWAP mode)."""

    def __init__(self, device: str):
        self.device = device
        self.parked: set[str] = set()  # "base", "refiner"

    def park(self, name: str, unet: Any) -> None:
        if name not in self.parked:
            unet.to("cpu")  # to the CPU cannot run out of device memory
            self.parked.add(name)
            free_memory()
            logger.debug("parked the %s UNet in CPU memory", name)

    def unpark(self, name: str, unet: Any) -> None:
        if name in self.parked:
            try:
                unet.to(self.device)
            except BaseException:
                # Out of device memory half-way: what reached the card goes back, so the accounting stays true.
                unet.to("cpu")
                free_memory()
                raise
            self.parked.discard(name)


def make_room(
    budget: int | None,
    need: int,
    resident: Callable[[], int],
    victims: list[tuple[str, Callable[[], None]]],
) -> list[str]:
    """Call victims' evictions, in order, until `resident() + need` fits `budget`; returns what was taken out."""
    taken: list[str] = []
    if budget is None:
        return taken
    for label, evict in victims:
        if resident() + need <= budget:
            break
        evict()
        taken.append(label)
    if taken:
        logger.info("made room on the device for a call: took out %s", ", ".join(taken))
    if resident() + need > budget:
        logger.warning(
            "a call needs %s with %s resident, over the %s budget: it may run out of memory",
            memory.gib(need),
            memory.gib(resident()),
            memory.gib(budget),
        )
    return taken


def set_decode(vae: Any, fp: Footprint, decode: memory.Decode) -> None:
    """Slicing and tiling for this call, on the VAE it uses (the owner runs one call at a time)."""
    vae.use_slicing = decode.sliced
    vae.use_tiling = decode.tiled
    if decode.tiled:
        vae.tile_sample_min_size = fp.tile
        vae.tile_latent_min_size = fp.tile // 8
