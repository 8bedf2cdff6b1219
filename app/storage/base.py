"""The image store seam: what the service needs from any backend (local disk, S3).

Ids reaching a store were checked by `app.storage.ids.check_id`; backends check again before building a path
or a key. Failures are domain errors: `NotFound` (404), `StorageFull` (507), `StorageUnavailable` (503).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from app.storage.listing import ImagePage

# How long a presigned download URL stays valid; a redirect to one must not be cached longer.
PRESIGN_EXPIRY_S = 300


class ImageStore(Protocol):
    async def open(self) -> None:
        """Prepare the backend (create the directory, check the bucket); called once at startup."""

    async def close(self) -> None: ...

    async def put(self, image_id: str, png: bytes, metadata: Mapping[str, str]) -> None:
        """Store `png` under `image_id` atomically: readers see the whole image or nothing."""

    async def get(self, image_id: str) -> bytes:
        """The stored bytes; raises `NotFound` for an unknown (or removed) id."""

    async def exists(self, image_id: str) -> bool: ...

    async def delete(self, image_id: str) -> bool:
        """Remove an image; False if there was none."""

    async def list_images(self, limit: int, cursor: str | None = None) -> ImagePage:
        """A page of stored images, newest first (`app.storage.listing`); raises `InvalidRequest` for a bad cursor."""

    async def read_start(self, image_id: str, max_bytes: int) -> bytes:
        """At most the first `max_bytes` of an image (a PNG's text chunks come before its pixels); raises `NotFound`."""

    async def presigned_url(self, image_id: str) -> str | None:
        """A time-limited URL the client may fetch directly, or None where the backend gives none.

        Raises `NotFound` for an unknown id when it does give URLs (a URL to nothing would answer the store's own
        404, not the API's)."""

    async def put_record(self, name: str, data: bytes) -> None:
        """Small JSON records shared by replicas (job states), e.g. name="jobs/<id>.json"."""

    async def get_record(self, name: str) -> bytes | None: ...
