"""`node_info` for event payloads, in IGI's shape: who this replica is, and how loaded it is right now.

Collecting system stats reads /proc, /sys and the GPU driver, so it runs in a thread and is cached for a second:
a burst of events (a batch of 8 images) costs one collection, and the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import logging
import socket
import time
from pathlib import Path
from typing import Any

import psutil

from app.config import Settings

logger = logging.getLogger(__name__)

CACHE_S = 1.0
PACKAGES = {"torch": "torch", "diffusers": "diffusers", "transformers": "transformers", "sdxl_serve": "sdxl-serve"}


class NodeInfo:
    def __init__(self, node_id: str, node_group: str | None, storage_path: Path):
        self.identity = {"node_id": node_id, "node_group": node_group}
        self._storage_path = storage_path
        self._stats: dict[str, Any] | None = None
        self._taken = 0.0
        self._lock = asyncio.Lock()
        psutil.cpu_percent(percpu=True)  # the first call only starts psutil's measuring interval

    @classmethod
    def from_settings(cls, settings: Settings) -> NodeInfo:
        return cls(settings.node_id or socket.gethostname(), settings.node_group, settings.image_dir)

    async def snapshot(self) -> dict[str, Any]:
        async with self._lock:  # concurrent deliveries share one collection
            if self._stats is None or time.monotonic() - self._taken > CACHE_S:
                self._stats = await asyncio.to_thread(self.collect)
                self._taken = time.monotonic()
            return {"identity": self.identity, "system_stats": self._stats}

    def collect(self) -> dict[str, Any]:
        return {
            "cpu": _cpu(),
            "memory": _memory(),
            "storage": _storage(self._storage_path),
            "gpu": _gpus(),
            "packages": packages(),
        }


def _cpu() -> dict[str, Any]:
    try:
        freqs = psutil.cpu_freq(percpu=True) or []
    except (OSError, NotImplementedError, AttributeError):  # absent in some containers and platforms
        freqs = []
    return {
        "utilization": psutil.cpu_percent(percpu=True),
        "frequency": [{"current": f.current, "min": f.min, "max": f.max} for f in freqs],
    }


def _memory() -> dict[str, Any]:
    mem = psutil.virtual_memory()
    return {"total": mem.total, "available": mem.available, "percent": mem.percent, "used": mem.used, "free": mem.free}


def _storage(path: Path) -> dict[str, Any]:
    # The image directory may not exist (S3 storage) or not yet; measure the disk it would live on.
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = psutil.disk_usage(str(path))
    return {"total": usage.total, "used": usage.used, "free": usage.free}


def _gpus() -> list[dict[str, Any]]:
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        try:
            total = torch.cuda.get_device_properties(index).total_memory
            used = _optional(getattr(torch.cuda, "device_memory_used", None), index)  # torch >= 2.6
            initialized = torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
            if used is None and initialized and torch.cuda.memory_reserved(index) > 0:
                # Without NVML, ask CUDA, but only on a device we already hold a context on: querying any
                # other device would create a context there (hundreds of MB) just to report on it.
                free, total = torch.cuda.mem_get_info(index)
                used = total - free
            gpus.append(
                {
                    "id": index,
                    "name": torch.cuda.get_device_name(index),
                    "load": _optional(torch.cuda.utilization, index),
                    "free_memory": None if used is None else total - used,
                    "used_memory": used,
                    "total_memory": total,
                    "temperature": _optional(torch.cuda.temperature, index),
                }
            )
        except Exception as exc:  # a stats failure must never cost an event
            logger.debug("could not read GPU %d stats: %s", index, exc)
    return gpus


def _optional(read: Any, index: int) -> Any:
    """torch reads load, temperature and used memory through NVML (pynvml), which may not be installed."""
    try:
        return read(index)
    except Exception:
        return None


@functools.cache
def packages() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for key, dist in PACKAGES.items():
        try:
            versions[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[key] = None
    import torch

    versions["cuda"] = torch.version.cuda
    return versions
