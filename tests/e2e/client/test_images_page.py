"""Client.images and AsyncClient.images (GET /images) against a real server: pages newest first, the cursor passed on,
the provenance typed through, a bad limit raised as the client's own error."""

from __future__ import annotations

from typing import Any

import pytest

from app.client import AsyncClient, Client, ImagesPage, InvalidRequestError, StoredImageInfo
from tests.conftest import LiveServer


def _provenance(image: StoredImageInfo) -> dict[str, Any]:
    assert image.provenance is not None
    return image.provenance


def test_pages_with_the_sync_client(server: LiveServer) -> None:
    with Client(server.url, timeout=60) as sdxl:
        made = sdxl.generate("a lighthouse", seed=11, num_images=3, num_inference_steps=2)
        ids = {image.id for image in made.images}
        whole = sdxl.images(limit=100)
        assert isinstance(whole, ImagesPage) and whole.next_cursor is None
        listed = {image.id: image for image in whole.images}
        assert ids <= set(listed)
        assert {_provenance(listed[i])["seed"] for i in ids} == {11, 12, 13}
        seen, cursor = [], None
        while True:
            page = sdxl.images(limit=2, cursor=cursor)
            seen += page.images
            if (cursor := page.next_cursor) is None:
                break
        assert seen == whole.images
        with pytest.raises(InvalidRequestError, match="limit"):
            sdxl.images(limit=0)


async def test_the_async_client_reads_the_same_page(server: LiveServer) -> None:
    with Client(server.url, timeout=60) as sdxl:
        expected = sdxl.images(limit=5)
    async with AsyncClient(server.url, timeout=60) as sdxl_async:
        assert await sdxl_async.images(limit=5) == expected
        with pytest.raises(InvalidRequestError) as raised:
            await sdxl_async.images(cursor="not-a-cursor")
        assert raised.value.field == "cursor"
