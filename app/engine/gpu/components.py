"""A few loaded VAEs or ControlNets, least recently used dropped first (GPU owner's thread only)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from app.engine.gpu.model_cache import free_memory, modules_bytes
from app.engine.models.registry import ExtraEntry


class Components:
    def __init__(self, load: Callable[[ExtraEntry], Any], keep: int):
        self._load, self._keep = load, keep
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()  # name -> (module, bytes)

    def get(self, entry: ExtraEntry) -> Any:
        if entry.name in self._items:
            self._items.move_to_end(entry.name)
            return self._items[entry.name][0]
        module = self._load(entry)
        self._items[entry.name] = (module, modules_bytes(module))
        while len(self._items) > self._keep:
            self._items.popitem(last=False)
            free_memory()
        return module

    def has(self, name: str) -> bool:
        return name in self._items

    def drop(self, name: str) -> None:
        if self._items.pop(name, None) is not None:
            free_memory()

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self._items.values())

    def loaded(self) -> list[tuple[str, Any]]:
        return [(name, module) for name, (module, _) in self._items.items()]
