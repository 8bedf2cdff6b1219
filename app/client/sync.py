"""The blocking client. Every method sends one `Call` (app.client.calls) with retries (app.client.retry)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
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


class Client(ClientBase):
    """`with Client("http://127.0.0.1:8000", api_key=KEY) as sdxl: sdxl.generate("a lighthouse", seed=1)`.

    Failures raise subclasses of `SdxlError` (app.client.errors).
    """

    _http: httpx.Client

    def _open(self, **options: Any) -> None:
        self._http = httpx.Client(**options)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # --- images ------------------------------------------------------------------------------------
    def generate(self, prompt: str, **fields: Unpack[GenerateParams]) -> ImageResponse:
        """POST /generate, waiting for the images: their ids and seeds (`.images`), the job id and timings."""
        return self._call(calls.generate(prompt, fields))

    def generate_png(self, prompt: str, **fields: Unpack[GenerateParams]) -> PngImage:
        """POST /generate with `Accept: image/png`: the PNG itself, with its id and seed (one image only)."""
        return self._call(calls.generate_png(prompt, fields))

    def submit(self, prompt: str, **fields: Unpack[GenerateParams]) -> JobResponse:
        """POST /generate with `Prefer: respond-async`: the queued job, at once. Follow it with `job_events`."""
        return self._call(calls.submit(prompt, fields))

    def refine(self, image_id: str, prompt: str, **fields: Unpack[RefineParams]) -> ImageResponse:
        """POST /refine: the SDXL refiner over a stored image; the result is a new image with `parent_id`."""
        return self._call(calls.refine(image_id, prompt, fields))

    def submit_refine(self, image_id: str, prompt: str, **fields: Unpack[RefineParams]) -> JobResponse:
        """POST /refine with `Prefer: respond-async`: the queued job, at once."""
        return self._call(calls.submit_refine(image_id, prompt, fields))

    def img2img(self, prompt: str, **fields: Unpack[ImageToImageParams]) -> ImageResponse:
        """POST /img2img: give exactly one of `image` (bytes, a path, or base64) or `image_id` (a stored image)."""
        return self._call(calls.img2img(prompt, fields))

    def inpaint(self, prompt: str, **fields: Unpack[InpaintParams]) -> ImageResponse:
        """POST /inpaint: as `img2img`, plus exactly one of `mask` or `mask_id` (white is repainted)."""
        return self._call(calls.inpaint(prompt, fields))

    def download(self, image_id: str, path: str | Path | None = None) -> bytes:
        """GET /download/{id}: the PNG's bytes, also written to `path` when given."""
        png = self._call(calls.download(image_id))
        if path is not None:
            Path(path).write_bytes(png)
        return png

    def images(self, limit: int | None = None, cursor: str | None = None) -> ImagesPage:
        """GET /images: a page of stored images, newest first, with their provenance; pass `next_cursor` on."""
        return self._call(calls.images(limit, cursor))

    def delete_image(self, image_id: str) -> None:
        """DELETE /images/{id}."""
        self._call(calls.delete_image(image_id))

    # --- jobs --------------------------------------------------------------------------------------
    def job(self, job_id: str) -> JobResponse:
        """GET /jobs/{id}: status, queue position, progress, and the images once it succeeded."""
        return self._call(calls.job(job_id))

    def cancel_job(self, job_id: str) -> JobResponse:
        """DELETE /jobs/{id}: cancels a queued job, or stops a running one at its next step."""
        return self._call(calls.cancel_job(job_id))

    def job_events(self, job_id: str) -> Iterator[JobResponse]:
        """GET /jobs/{id}/events: the job now and after each change, ending with its terminal state.

        Raises SdxlConnectionError if the stream ends before the job does; `job(id)` then tells where it is."""
        response = self._send(calls.job_events(job_id), stream=True)
        decoder = JobEventDecoder()
        try:
            for line in response.iter_lines():
                if (job := decoder.feed(line)) is not None:
                    yield job
                    if is_terminal(job):
                        return
        except httpx.TransportError as exc:
            raise error_from_transport(exc, self.base_url) from exc
        finally:
            response.close()
        raise SdxlConnectionError(f"the event stream of job {job_id} ended before the job", request_sent=True)

    # --- service -----------------------------------------------------------------------------------
    def health(self) -> HealthResponse:
        """GET /health: the process answers."""
        return self._call(calls.health())

    def ready(self) -> ReadyResponse:
        """GET /ready: the model is loaded. Not retried: while not ready it raises UnavailableError at once."""
        return self._call(calls.ready())

    def models(self) -> ModelsResponse:
        """GET /models: the models, with where each is loaded and its defaults, and the add-ons a request may name."""
        return self._call(calls.models())

    # --- sending -----------------------------------------------------------------------------------
    def _call(self, call: Call[T]) -> T:
        response = self._send(call)
        if (hop := call.redirected(response)) is not None:
            call, response = hop, self._send(hop)
        return call.read(response)

    def _send(self, call: Call[Any], *, stream: bool = False) -> httpx.Response:
        for attempt in itertools.count():
            try:
                return self._attempt(call, stream)
            except SdxlError as error:
                if (delay := self.retry.delay(attempt, call, error)) is None:
                    raise
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _attempt(self, call: Call[Any], stream: bool) -> httpx.Response:
        try:
            response = self._http.send(self._request(self._http, call), stream=stream)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, self.base_url) from exc
        if response.is_error:
            response.read()
            response.close()
        return check(response)
