"""Retries, by fault injection: httpx.MockTransport answers 429/503 (or fails the connection) on cue, since a
real server cannot be made to on demand. What is retried is in app/client/retry.py's docstring."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from app.client import (
    AsyncClient,
    Client,
    QueueFullError,
    SdxlConnectionError,
    SdxlError,
    ServerError,
    UnavailableError,
)
from app.client.errors import parse_retry_after

URL = "http://sdxl.test"
IMAGE = {
    "id": "a" * 32,
    "seed": 1,
    "width": 256,
    "height": 256,
    "images": [{"id": "a" * 32, "seed": 1, "width": 256, "height": 256}],
    "model": "tiny",
    "parent_id": None,
    "job_id": "b" * 32,
    "timings": {},
}

Answer = httpx.Response | Exception


def _error(status: int, type_: str, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body: dict[str, Any] = {"error": {"type": type_, "message": f"{type_} happened", "field": None, "details": []}}
    return httpx.Response(status, json=body, headers=headers)


class Script:
    """Answers requests in order from a list; records each request and when it came."""

    def __init__(self, *answers: Answer):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(time.monotonic())
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


@pytest.fixture
def scripted() -> Iterator[Callable[..., tuple[Client, Script]]]:
    clients: list[Client] = []

    def make(*answers: Answer, **options: Any) -> tuple[Client, Script]:
        script = Script(*answers)
        client = Client(URL, api_key="k", transport=httpx.MockTransport(script), **options)
        clients.append(client)
        return client, script

    yield make
    for client in clients:
        client.close()


def test_429_waits_retry_after_then_succeeds(scripted: Callable[..., tuple[Client, Script]]) -> None:
    client, script = scripted(_error(429, "queue_full", "0.3"), httpx.Response(200, json=IMAGE))
    assert client.generate("x").id == IMAGE["id"]
    assert len(script.requests) == 2
    assert 0.3 <= script.gaps()[0] < 1.0
    # The retry is the same request, key included.
    assert json.loads(script.requests[1].content) == {"prompt": "x"}
    assert script.requests[1].headers["x-api-key"] == "k"


def test_503_without_retry_after_backs_off_exponentially(scripted: Callable[..., tuple[Client, Script]]) -> None:
    client, script = scripted(
        _error(503, "not_ready"), _error(503, "not_ready"), httpx.Response(200, json=IMAGE), max_retries=2
    )
    client.generate("x")
    first, second = script.gaps()
    assert 0.5 <= first < 0.9 and 1.0 <= second < 1.5  # backoff 0.5 s, doubling


def test_retry_after_is_capped(scripted: Callable[..., tuple[Client, Script]]) -> None:
    client, script = scripted(_error(429, "queue_full", "3600"), httpx.Response(200, json=IMAGE), max_retry_wait=0.2)
    client.generate("x")
    assert 0.2 <= script.gaps()[0] < 0.7


def test_gives_up_after_max_retries_with_the_last_error(scripted: Callable[..., tuple[Client, Script]]) -> None:
    client, script = scripted(*[_error(429, "queue_full", "0") for _ in range(3)], max_retries=2)
    with pytest.raises(QueueFullError) as caught:
        client.generate("x")
    assert len(script.requests) == 3 and caught.value.retry_after == 0


@pytest.mark.parametrize(
    ("status", "type_"), [(400, "bad"), (409, "cancelled"), (500, "internal_error"), (507, "storage_full")]
)
def test_other_statuses_are_not_retried(
    scripted: Callable[..., tuple[Client, Script]], status: int, type_: str
) -> None:
    client, script = scripted(_error(status, type_, "0"), httpx.Response(200, json=IMAGE), max_retries=3)
    with pytest.raises(Exception) as caught:
        client.generate("x")
    assert len(script.requests) == 1
    assert getattr(caught.value, "status_code", None) == status
    assert isinstance(caught.value, ServerError) == (status >= 500)


def test_ready_is_not_retried(scripted: Callable[..., tuple[Client, Script]]) -> None:
    # /ready's 503 is the answer asked for, not a reason to wait.
    client, script = scripted(_error(503, "not_ready", "5"), max_retries=3)
    with pytest.raises(UnavailableError) as caught:
        client.ready()
    assert len(script.requests) == 1 and caught.value.retry_after == 5


def test_refused_connection_is_retried_even_for_post(scripted: Callable[..., tuple[Client, Script]]) -> None:
    client, script = scripted(httpx.ConnectError("refused"), httpx.Response(200, json=IMAGE))
    client.generate("x")
    assert len(script.requests) == 2


def test_broken_connection_after_sending_retries_get_only(scripted: Callable[..., tuple[Client, Script]]) -> None:
    # The POST may have generated and stored an image before the connection broke: sending it again is not safe.
    client, script = scripted(httpx.ReadError("reset"), httpx.Response(200, json=IMAGE))
    with pytest.raises(SdxlConnectionError) as caught:
        client.generate("x")
    assert len(script.requests) == 1 and caught.value.request_sent
    job: dict[str, Any] = {
        "id": "c" * 32,
        "kind": "generate",
        "status": "running",
        "model": "tiny",
        "queue_position": None,
        "progress": {"step": 1, "total": 4},
        "created": 1.0,
        "started": 1.0,
        "finished": None,
        "timings": {},
        "images": [],
        "parent_id": None,
        "error": None,
    }
    client, script = scripted(httpx.ReadError("reset"), httpx.Response(200, json=job))
    assert client.job("c" * 32).progress.step == 1
    assert len(script.requests) == 2


def test_redirect_to_another_origin_drops_the_key(scripted: Callable[..., tuple[Client, Script]]) -> None:
    # Presigned S3 downloads answer 307; X-API-Key must not travel to the bucket's host.
    location = "https://bucket.example/sdxl-serve/a.png?X-Amz-Signature=s"
    client, script = scripted(httpx.Response(307, headers={"Location": location}), httpx.Response(200, content=b"png"))
    assert client.download("a" * 32) == b"png"
    first, second = script.requests
    assert first.headers["x-api-key"] == "k" and "x-api-key" not in second.headers
    assert str(second.url) == location


def test_unexpected_answers_are_errors_not_tracebacks(scripted: Callable[..., tuple[Client, Script]]) -> None:
    # A POST is never redirected (that would turn it into a GET); a wrong base URL answers with other things.
    client, script = scripted(httpx.Response(308, headers={"Location": "https://elsewhere/generate"}))
    with pytest.raises(SdxlError) as caught:
        client.generate("x")
    assert caught.value.type == "redirect" and "https://elsewhere/generate" in caught.value.message
    assert len(script.requests) == 1
    client, script = scripted(httpx.Response(200, text="<html>a proxy's page</html>"))
    with pytest.raises(SdxlError) as caught:
        client.generate("x")
    assert caught.value.type == "bad_response"


async def test_async_client_retries_the_same_way() -> None:
    script = Script(_error(503, "shutting_down", "0.2"), httpx.Response(200, json=IMAGE))
    async with AsyncClient(URL, transport=httpx.MockTransport(script)) as client:
        assert (await client.generate("x")).id == IMAGE["id"]
    assert len(script.requests) == 2 and 0.2 <= script.gaps()[0] < 1.0

    script = Script(_error(500, "internal_error", "0"))
    async with AsyncClient(URL, transport=httpx.MockTransport(script)) as client:
        with pytest.raises(ServerError):
            await client.generate("x")
    assert len(script.requests) == 1


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: now
