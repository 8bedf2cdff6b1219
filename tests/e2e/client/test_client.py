"""The typed client, sync and async, against a real server (tiny model, API key on): every endpoint, and the
service's errors arriving as their exception classes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.client import (
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    ImageResponse,
    InvalidRequestError,
    JobResponse,
    NotFoundError,
    PngImage,
    calls,
    error_from_job,
)
from tests.conftest import LiveServer, start_server, tiny_settings
from tests.helpers import decode

KEY = "client-test-key"
FAST: dict[str, Any] = {"num_inference_steps": 2}
UNKNOWN_ID = "0" * 32


@pytest.fixture(scope="module")
def keyed(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tiny_settings(model_cache, tmp_path_factory.mktemp("images"), generation_auth_key=KEY))
    yield live
    live.stop()


@pytest.fixture
def sdxl(keyed: LiveServer) -> Iterator[Client]:
    with Client(keyed.url, api_key=KEY, timeout=60) as client:
        yield client


def test_generate_download_refine_delete(sdxl: Client, tmp_path: Path) -> None:
    result = sdxl.generate("a lighthouse", seed=7, num_images=2, **FAST)
    assert isinstance(result, ImageResponse)
    assert [i.seed for i in result.images] == [7, 8] and result.id == result.images[0].id
    assert result.model == "tiny" and result.job_id and result.timings.inference_ms > 0

    png = sdxl.download(result.images[1].id, tmp_path / "second.png")
    assert (tmp_path / "second.png").read_bytes() == png
    assert decode(png).size == (result.width, result.height)

    refined = sdxl.refine(result.id, "a lighthouse, detailed", strength=0.5, num_inference_steps=4)
    assert refined.parent_id == result.id and refined.id != result.id

    sdxl.delete_image(refined.id)
    with pytest.raises(NotFoundError) as caught:
        sdxl.download(refined.id)
    assert caught.value.status_code == 404 and caught.value.type == "not_found"


def test_generate_png_is_the_stored_image(sdxl: Client) -> None:
    image = sdxl.generate_png("a fox", seed=3, **FAST)
    assert isinstance(image, PngImage) and image.seed == 3
    assert sdxl.download(image.id) == image.png


def test_submit_then_follow_events_to_the_end(sdxl: Client) -> None:
    job = sdxl.submit("a boat", seed=1, num_images=2, **FAST)
    assert isinstance(job, JobResponse) and job.status in ("queued", "running") and job.kind == "generate"
    states = list(sdxl.job_events(job.id))
    assert all(s.id == job.id for s in states)
    steps = [s.progress.step for s in states]
    assert steps == sorted(steps)
    last = states[-1]
    assert last.status == "succeeded" and last.progress.step == last.progress.total == 4
    assert [i.seed for i in last.images] == [1, 2]
    assert sdxl.job(job.id) == last
    assert sdxl.cancel_job(job.id).status == "succeeded"  # nothing left to cancel


def test_cancelled_job_maps_to_conflict(sdxl: Client) -> None:
    job = sdxl.submit("slow", width=512, height=512, num_inference_steps=40)
    sdxl.cancel_job(job.id)
    last = list(sdxl.job_events(job.id))[-1]
    assert last.status == "cancelled"
    error = error_from_job(last)
    assert isinstance(error, ConflictError) and error.type == "cancelled"


def test_service_routes(sdxl: Client) -> None:
    assert sdxl.health().status == "ok"
    ready = sdxl.ready()
    assert ready.status == "ready" and ready.model == "tiny"


def test_wrong_key_is_authentication_error_and_not_retried(keyed: LiveServer) -> None:
    with Client(keyed.url, api_key="wrong", max_retries=3) as client:
        started = time.monotonic()
        with pytest.raises(AuthenticationError) as caught:
            client.generate("x", **FAST)
        assert time.monotonic() - started < 2
    assert caught.value.status_code == 401 and caught.value.type == "unauthorized"
    assert "API key" in caught.value.message


def test_validation_error_names_the_field(sdxl: Client) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        sdxl.generate("x", width=260)
    error = caught.value
    assert error.status_code == 422 and error.type == "invalid_request" and error.field == "width"
    assert "multiple of 8" in error.message and "[field: width]" in str(error)


def test_extra_fields_reach_the_service(sdxl: Client) -> None:
    # Unknown fields are sent as they are (the service rejects this one, proving it arrived).
    with pytest.raises(InvalidRequestError) as caught:
        sdxl.generate("x", extra={"no_such_field": 1})
    assert caught.value.field == "no_such_field"


def test_unknown_and_malformed_ids(sdxl: Client) -> None:
    with pytest.raises(NotFoundError):
        sdxl.job(UNKNOWN_ID)
    with pytest.raises(NotFoundError):
        list(sdxl.job_events(UNKNOWN_ID))
    with pytest.raises(NotFoundError):
        sdxl.delete_image(UNKNOWN_ID)
    with pytest.raises(InvalidRequestError) as caught:
        sdxl.download("not-an-id")
    assert caught.value.type == "invalid_id" and caught.value.field == "id"
    # An id is always one path segment: "../" cannot walk to another route.
    assert calls.download("../../health").url == "/download/..%2F..%2Fhealth"
    with pytest.raises(NotFoundError):
        sdxl.download("../../health")


async def test_async_client_round_trip(keyed: LiveServer) -> None:
    async with AsyncClient(keyed.url, api_key=KEY, timeout=60) as sdxl:
        assert (await sdxl.health()).status == "ok"
        result = await sdxl.generate("a lighthouse", seed=11, **FAST)
        assert decode(await sdxl.download(result.id)).size == (result.width, result.height)
        png = await sdxl.generate_png("a lighthouse", seed=11, **FAST)
        assert png.png == await sdxl.download(result.id)  # same request, same seed: the same bytes

        job = await sdxl.submit("a boat", seed=5, **FAST)
        states = [state async for state in sdxl.job_events(job.id)]
        assert states[-1].status == "succeeded" and (await sdxl.job(job.id)).images == states[-1].images

        refined = await sdxl.refine(result.id, "detailed", strength=0.5, num_inference_steps=4)
        assert refined.parent_id == result.id
        await sdxl.delete_image(refined.id)
        with pytest.raises(NotFoundError):
            await sdxl.download(refined.id)
        with pytest.raises(InvalidRequestError) as caught:
            await sdxl.generate("x", num_inference_steps=0)
        assert caught.value.field == "num_inference_steps"

    async with AsyncClient(keyed.url, api_key="wrong") as wrong:
        with pytest.raises(AuthenticationError):
            await wrong.job(UNKNOWN_ID)
