"""Client methods for GET /models, POST /img2img and POST /inpaint, against a real server."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.client import AsyncClient, Client, InvalidRequestError, ModelsResponse
from tests.conftest import LiveServer
from tests.helpers import decode

FAST: dict[str, Any] = {"num_inference_steps": 2}


@pytest.fixture
def sdxl(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, timeout=60) as client:
        yield client


def _png(color: int, size: tuple[int, int] = (256, 256)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (color, color, color)).save(out, format="PNG")
    return out.getvalue()


def test_models(server: LiveServer, sdxl: Client) -> None:
    listing = sdxl.models()
    assert isinstance(listing, ModelsResponse)
    names = [m.name for m in listing.models]
    assert listing.default in names
    default = listing.models[names.index(listing.default)]
    assert default.loaded and default.location == "device" and default.defaults is not None
    assert listing.schedulers


def test_img2img_from_bytes_path_and_stored_id(server: LiveServer, sdxl: Client, tmp_path: Path) -> None:
    from_bytes = sdxl.img2img("a fox", image=_png(128), strength=0.5, seed=1, **FAST)
    assert decode(sdxl.download(from_bytes.id)).size == (256, 256)
    (tmp_path / "in.png").write_bytes(_png(64))
    from_path = sdxl.img2img("a fox", image=tmp_path / "in.png", strength=0.5, **FAST)
    assert from_path.id != from_bytes.id
    from_id = sdxl.img2img("a fox", image_id=from_bytes.id, strength=0.5, **FAST)
    assert from_id.images[0].id == from_id.id
    with pytest.raises(InvalidRequestError):
        sdxl.img2img("a fox", image=_png(1), image_id=from_bytes.id)


def test_inpaint(server: LiveServer, sdxl: Client) -> None:
    stored = sdxl.generate("a room", seed=2, **FAST)
    result = sdxl.inpaint("a window", image_id=stored.id, mask=_png(255), seed=2, **FAST)
    assert decode(sdxl.download(result.id)).size == (stored.width, stored.height)
    with pytest.raises(InvalidRequestError):
        sdxl.inpaint("a window", image_id=stored.id)  # no mask


async def test_async_models_and_img2img(server: LiveServer) -> None:
    async with AsyncClient(server.url, timeout=60) as sdxl:
        assert (await sdxl.models()).default
        result = await sdxl.img2img("a fox", image=_png(200), strength=0.5, **FAST)
        assert decode(await sdxl.download(result.id)).size == (256, 256)
