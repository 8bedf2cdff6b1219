"""The event seam: the engine says what happened; a sink decides where it goes (webhooks, or nowhere).

`emit` never blocks and never raises: delivery happens in the background, so events cannot slow down or
break generation.
"""

from __future__ import annotations

from typing import Any, Protocol

EVENTS = ("model.loaded", "model.unloaded", "image.generated", "image.stored")


class EventSink(Protocol):
    def emit(self, event: str, data: dict[str, Any], *, image: bytes | None = None) -> None:
        """Queue `event` with its data; `image` is the PNG, for sinks that ship it (IGI's post strategy)."""

    async def start(self) -> None: ...

    async def close(self) -> None:
        """Deliver what is queued (within a bounded time), then stop."""


class NoEvents:
    def emit(self, event: str, data: dict[str, Any], *, image: bytes | None = None) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
