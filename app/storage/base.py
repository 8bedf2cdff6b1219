"""The image store seam: what the service needs from any backend (local disk today, S3 next)."""

from __future__ import annotations

from typing import Protocol


class ImageStore(Protocol):
    async def put(self, image_id: str, png: bytes) -> None:
        """Store `png` under `image_id` atomically: readers see the whole image or nothing."""

    async def get(self, image_id: str) -> bytes:
        """The stored bytes; raises `app.errors.NotFound` for an unknown id."""

    async def exists(self, image_id: str) -> bool: ...
