"""The asyncio client: `Client`'s methods, awaited. Documented once, on `Client`."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from app.client import calls
from app.client.base import ClientBase, check
from app.client.calls import Call
from app.client.errors import SdxlConnectionError, SdxlError, error_from_transport
from app.client.models import (
    HealthResponse,
    ImageResponse,
    ImagesPage,
    JobResponse,
    ModelsResponse,
    PngImage,
    ReadyResponse,
    is_terminal,
)
from app.client.params import GenerateParams, ImageToImageParams, InpaintParams, RefineParams
from app.client.sse import JobEventDecoder

T = TypeVar("T")


class AsyncClient(ClientBase):
    """`async with AsyncClient(url, api_key=KEY) as sdxl: await sdxl.generate("a lighthouse", seed=1)`."""

    _http: httpx.AsyncClient

    def _open(self, **options: Any) -> None:
        self._http = httpx.AsyncClient(**options)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- images ------------------------------------------------------------------------------------
    async def generate(self, prompt: str, **fields: Unpack[GenerateParams]) -> ImageResponse:
        return await self._call(calls.generate(prompt, fields))

    async def generate_png(self, prompt: str, **fields: Unpack[GenerateParams]) -> PngImage:
        return await self._call(calls.generate_png(prompt, fields))

    async def submit(self, prompt: str, **fields: Unpack[GenerateParams]) -> JobResponse:
        return await self._call(calls.submit(prompt, fields))

    async def refine(self, image_id: str, prompt: str, **fields: Unpack[RefineParams]) -> ImageResponse:
        return await self._call(calls.refine(image_id, prompt, fields))

    async def submit_refine(self, image_id: str, prompt: str, **fields: Unpack[RefineParams]) -> JobResponse:
        return await self._call(calls.submit_refine(image_id, prompt, fields))

    async def img2img(self, prompt: str, **fields: Unpack[ImageToImageParams]) -> ImageResponse:
        return await self._call(calls.img2img(prompt, fields))

    async def inpaint(self, prompt: str, **fields: Unpack[InpaintParams]) -> ImageResponse:
        return await self._call(calls.inpaint(prompt, fields))

    async def download(self, image_id: str, path: str | Path | None = None) -> bytes:
        png = await self._call(calls.download(image_id))
        if path is not None:
            Path(path).write_bytes(png)
        return png

    async def images(self, limit: int | None = None, cursor: str | None = None) -> ImagesPage:
        return await self._call(calls.images(limit, cursor))

    async def delete_image(self, image_id: str) -> None:
        await self._call(calls.delete_image(image_id))

    # --- jobs --------------------------------------------------------------------------------------
    async def job(self, job_id: str) -> JobResponse:
        return await self._call(calls.job(job_id))

    async def cancel_job(self, job_id: str) -> JobResponse:
        return await self._call(calls.cancel_job(job_id))

    async def job_events(self, job_id: str) -> AsyncIterator[JobResponse]:
        response = await self._send(calls.job_events(job_id), stream=True)
        decoder = JobEventDecoder()
        try:
            async for line in response.aiter_lines():
                if (job := decoder.feed(line)) is not None:
                    yield job
                    if is_terminal(job):
                        return
        except httpx.TransportError as exc:
            raise error_from_transport(exc, self.base_url) from exc
        finally:
            await response.aclose()
        raise SdxlConnectionError(f"the event stream of job {job_id} ended before the job", request_sent=True)

    # --- service -----------------------------------------------------------------------------------
    async def health(self) -> HealthResponse:
        return await self._call(calls.health())

    async def ready(self) -> ReadyResponse:
        return await self._call(calls.ready())

    async def models(self) -> ModelsResponse:
        return await self._call(calls.models())

    # --- sending -----------------------------------------------------------------------------------
    async def _call(self, call: Call[T]) -> T:
        response = await self._send(call)
        if (hop := call.redirected(response)) is not None:
            call, response = hop, await self._send(hop)
        return call.read(response)

    async def _send(self, call: Call[Any], *, stream: bool = False) -> httpx.Response:
        for attempt in itertools.count():
            try:
                return await self._attempt(call, stream)
            except SdxlError as error:
                if (delay := self.retry.delay(attempt, call, error)) is None:
                    raise
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _attempt(self, call: Call[Any], stream: bool) -> httpx.Response:
        try:
            response = await self._http.send(self._request(self._http, call), stream=stream)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, self.base_url) from exc
        if response.is_error:
            await response.aread()
            await response.aclose()
        return check(response)
