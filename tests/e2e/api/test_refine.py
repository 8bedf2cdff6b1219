"""/refine on the real tiny refiner: round trip, module sharing, one load under concurrency, retry after failure."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.engine.gpu import loader
from app.engine.gpu import model_cache as pipeline_cache
from app.engine.images.metadata import read_provenance
from app.errors import ModelLoadError
from tests.conftest import LiveServer, start_server, tiny_settings
from tests.helpers import assert_error, decode, pixels


def test_refine_round_trip(client: httpx.Client) -> None:
    parent = client.post("/generate", json={"prompt": "castle", "seed": 3}).json()
    r = client.post("/refine", json={"id": parent["id"], "prompt": "castle, sharp", "strength": 0.5, "seed": 9})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] != parent["id"] and body["parent_id"] == parent["id"] and body["seed"] == 9
    png = client.get(f"/download/{body['id']}").content
    assert decode(png).size == (256, 256)
    record = read_provenance(png)
    assert record["kind"] == "refine" and record["parent_id"] == parent["id"] and record["strength"] == 0.5
    before = pixels(client.get(f"/download/{parent['id']}").content)
    assert abs(pixels(png) - before).mean() > 1  # the refiner really changed the picture

    again = client.post("/refine", json={"id": parent["id"], "prompt": "castle, sharp", "strength": 0.5, "seed": 9})
    assert client.get(f"/download/{again.json()['id']}").content == png


def test_refine_unknown_image_is_404(client: httpx.Client) -> None:
    assert_error(client.post("/refine", json={"id": "a" * 32, "prompt": "x"}), 404, "not_found")


def test_refine_rejects_zero_effective_steps(client: httpx.Client) -> None:
    image_id = client.post("/generate", json={"prompt": "x", "seed": 1}).json()["id"]
    r = client.post("/refine", json={"id": image_id, "prompt": "x", "num_inference_steps": 3, "strength": 0.2})
    error = assert_error(r, 422, "invalid_request", field="strength")
    assert {d["field"] for d in error["details"]} == {"num_inference_steps", "strength"}


@pytest.fixture
def fresh_server(model_cache: Path, tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(tiny_settings(model_cache, tmp_path / "images"))
    yield live
    live.stop()


async def test_refiner_loads_once_under_concurrent_first_calls_and_shares_modules(fresh_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=fresh_server.url, timeout=120) as c:
        image_id = (await c.post("/generate", json={"prompt": "x", "seed": 1})).json()["id"]
        assert fresh_server.service.refiner_loads == 0  # lazy: not loaded at startup
        calls = [c.post("/refine", json={"id": image_id, "prompt": "y", "seed": i}) for i in range(5)]
        responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [200] * 5
    assert fresh_server.service.refiner_loads == 1
    base, refiner = fresh_server.service.base_pipeline, fresh_server.service.refiner_pipeline
    assert refiner.text_encoder_2 is base.text_encoder_2 and refiner.vae is base.vae
    assert refiner.unet is not base.unet


async def test_a_failed_refiner_load_is_not_retried_within_the_ttl(
    fresh_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three requests, one load attempt: the others are refused at once, with Retry-After, until the TTL ends."""
    real = loader.load_refiner
    attempts = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        attempts.append(kwargs)
        if len(attempts) == 1:  # fault injection: the first load fails as a corrupt file would
            raise ModelLoadError("could not load the refiner 'tiny' (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(loader, "load_refiner", flaky)
    async with httpx.AsyncClient(base_url=fresh_server.url, timeout=120) as c:
        image_id = (await c.post("/generate", json={"prompt": "x", "seed": 1})).json()["id"]
        first = await asyncio.gather(*[c.post("/refine", json={"id": image_id, "prompt": "y"}) for _ in range(2)])
        later = await c.post("/refine", json={"id": image_id, "prompt": "y"})
        for r in [*first, later]:
            assert "refiner 'tiny'" in assert_error(r, 503, "model_load_failed")["message"]
            assert int(r.headers["Retry-After"]) >= 1
        assert "(not retried for" in later.json()["error"]["message"] and int(later.headers["Retry-After"]) > 50
        assert len(attempts) == 1 and fresh_server.service.refiner_loads == 1
        assert (await c.get("/ready")).status_code == 200  # a failed refiner load does not take the service down
        monkeypatch.setattr(pipeline_cache, "FAILED_LOAD_TTL_S", 0.0)  # the TTL is over
        assert (await c.post("/refine", json={"id": image_id, "prompt": "y"})).status_code == 200
    assert len(attempts) == 2 and fresh_server.service.refiner_loads == 2
