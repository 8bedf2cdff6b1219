"""Loaded pipelines under a memory budget. Runs on the GPU owner's thread only, so loads are serialized with
generation and nothing here needs a lock.

The default model is pinned. Others are loaded on first use and evicted least-recently-used when the device
holds more than SDXL_MODEL_CACHE_MAX_MODELS pipelines or SDXL_MODEL_CACHE_MAX_BYTES bytes. An evicted pipeline
moves to the CPU tier (SDXL_MODEL_CPU_TIER > 0; switching back is then a copy to the device, not a disk load) or
is dropped, and its memory really is released: nothing else keeps a reference to it.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.engine.models.registry import ModelEntry
from app.errors import ModelLoadError

logger = logging.getLogger(__name__)

DEVICE, CPU, DISK = "device", "cpu", "disk"
FAILED_LOAD_TTL_S = 60.0


@dataclass
class Slot:
    entry: ModelEntry
    pinned: bool = False
    pipe: Any = None
    location: str = DISK
    bytes: int | None = None
    hits: int = 0  # found on the device
    misses: int = 0  # loaded from disk or brought back from the CPU tier
    loads: int = 0  # loads from disk
    last_used: float | None = None
    views: dict[Any, Any] = field(default_factory=dict)  # from_pipe pipelines sharing this one's modules
    failed: tuple[float, str] | None = None  # (monotonic time, message) of the last failed load


class PipelineCache:
    def __init__(
        self,
        entries: list[ModelEntry],
        pinned: str,
        load: Callable[[ModelEntry], Any],
        device: str,
        *,
        max_models: int,
        max_bytes: int,
        cpu_tier: int,
        on_change: Callable[[str, str, str], None] | None = None,
    ):
        self.slots = {e.name: Slot(e, pinned=e.name == pinned) for e in entries}
        self.pinned = pinned
        self._load = load
        self._device_name = device
        self.max_models, self.max_bytes, self.cpu_tier = max_models, max_bytes, cpu_tier
        self._on_change = on_change or (lambda name, old, new: None)
        self._on_device: OrderedDict[str, None] = OrderedDict()  # least recently used first
        # Read from the event loop (GET /models) while the owner reorders _on_device: a plain int is safe to read.
        self.device_bytes = 0
        self._on_cpu: OrderedDict[str, None] = OrderedDict()

    def get(self, name: str) -> Slot:
        """The model's slot with its pipeline on the device, loading or promoting it first if needed."""
        slot = self.slots[name]
        if slot.location == DEVICE:
            slot.hits += 1
            slot.last_used = time.time()
            self._on_device.move_to_end(name)
            return slot
        if slot.location == CPU:
            pipe, old = slot.pipe, CPU
            self._on_cpu.pop(name, None)
        else:
            self.refuse_if_failed(name)
            try:
                pipe, old = self._load(slot.entry), DISK  # raises ModelLoadError; then nothing has changed
            except ModelLoadError as exc:
                slot.failed = (time.monotonic(), exc.message)
                raise
            slot.loads += 1
        slot.misses += 1
        slot.last_used = time.time()
        size = slot.bytes if old == CPU and slot.bytes is not None else pipeline_bytes(pipe)
        self._make_room(size, keep=name)
        try:
            self._move(pipe, self._device_name)
        except BaseException:
            # Out of device memory mid-copy: whatever reached the device goes back, so nothing leaks or hides.
            if old == CPU:
                self._move(pipe, "cpu")
                self._on_cpu[name] = None
            else:
                slot.pipe, slot.location = None, DISK
            free_memory()
            raise
        slot.pipe, slot.location, slot.bytes = pipe, DEVICE, size
        self._on_device[name] = None
        self.device_bytes += size
        self._on_change(name, old, DEVICE)
        return slot

    def refuse_if_failed(self, name: str) -> None:
        """Callable from the event loop: see `refuse_if_recent`."""
        refuse_if_recent(self.slots[name].failed)

    def evict(self, name: str) -> None:
        """Take a model off the device to make room for a call (never the pinned default)."""
        if name in self._on_device and not self.slots[name].pinned:
            self._evict(name)

    def on_device(self) -> list[str]:
        """Models on the device, least recently used first."""
        return list(self._on_device)

    def resize(self, name: str, size: int) -> None:
        """A resident pipeline grew or shrank (a LoRA adapter loaded or deleted)."""
        slot = self.slots[name]
        if slot.location == DEVICE and slot.bytes is not None:
            self.device_bytes += size - slot.bytes
        slot.bytes = size

    def _make_room(self, incoming: int, keep: str) -> None:
        def over() -> bool:
            count = len(self._on_device) + 1 > self.max_models
            size = self.max_bytes > 0 and self.device_bytes + incoming > self.max_bytes
            return count or size

        for victim in list(self._on_device):
            if not over():
                return
            if victim != keep and not self.slots[victim].pinned:
                self._evict(victim)
        if over():
            logger.warning("model cache over budget: only pinned or requested models are left on the device")

    def _evict(self, name: str) -> None:
        slot = self.slots[name]
        self._on_device.pop(name, None)
        self.device_bytes -= slot.bytes or 0
        slot.views.clear()
        if self.cpu_tier > 0:
            self._move(slot.pipe, "cpu")
            slot.location = CPU
            self._on_cpu[name] = None
            self._on_change(name, DEVICE, CPU)
            while len(self._on_cpu) > self.cpu_tier:
                self._drop(next(iter(self._on_cpu)))
        else:
            self._drop(name)

    def _move(self, pipe: Any, device: str) -> None:
        # Loads are staged on the CPU; when the device is the CPU too there is nothing to copy, and diffusers'
        # `.to()` would still walk and re-check every module (~25 ms for the tiny model).
        if device != "cpu" or self._device_name != "cpu":
            pipe.to(device)

    def _drop(self, name: str) -> None:
        slot = self.slots[name]
        old = slot.location
        self._on_cpu.pop(name, None)
        self._on_device.pop(name, None)
        slot.pipe, slot.location, slot.views = None, DISK, {}
        free_memory()
        self._on_change(name, old, DISK)

    def loaded(self) -> list[tuple[str, Any]]:
        return [(n, s.pipe) for n, s in self.slots.items() if s.pipe is not None]


def refuse_if_recent(failed: tuple[float, str] | None) -> None:
    """A load that failed (at `failed`: monotonic time, message) is not tried again for FAILED_LOAD_TTL_S: every
    attempt would hold the GPU owner (a hub timeout, a corrupt file) while queued jobs wait."""
    if failed is None:
        return
    left = FAILED_LOAD_TTL_S - (time.monotonic() - failed[0])
    if left > 0:
        raise ModelLoadError(f"{failed[1]} (not retried for {left:.0f} s)", retry_after=left)


def pipeline_bytes(*pipes: Any) -> int:
    """Bytes of the distinct tensor storages behind the pipelines' modules (shared modules count once)."""
    return modules_bytes(*(c for pipe in pipes for c in pipe.components.values()))


def modules_bytes(*modules: Any) -> int:
    """Bytes of the distinct tensor storages behind the modules' parameters and buffers (shared ones once)."""
    import torch

    seen: set[Any] = set()
    total = 0
    for module in modules:
        if not isinstance(module, torch.nn.Module):
            continue
        for tensor in [*module.parameters(), *module.buffers()]:
            storage = tensor.untyped_storage()
            # On the meta device every data_ptr() is 0: there, each tensor is its own storage.
            key = (str(tensor.device), storage.data_ptr()) if storage.data_ptr() else id(tensor)
            if key not in seen:
                seen.add(key)
                total += storage.nbytes() if storage.data_ptr() else tensor.numel() * tensor.element_size()
    return total


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
