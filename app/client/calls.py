"""Every endpoint as a `Call`: the request to send and how to read its successful answer.

Both clients only send calls and hand the answer to `call.parse`, so what a method sends and what it returns is
written once, here, whatever the I/O style.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlencode

import httpx
from pydantic import BaseModel

from app.client.errors import SdxlError
from app.client.models import (
    HealthResponse,
    ImageResponse,
    ImagesPage,
    JobResponse,
    ModelsResponse,
    PngImage,
    ReadyResponse,
)
from app.client.params import request_body

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

PREFER_ASYNC = {"Prefer": "respond-async"}  # RFC 7240: answer 202 with the job at once


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    url: str  # relative to the client's base URL, or absolute (a redirect's target)
    parse: Callable[[httpx.Response], T]
    json: dict[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # False for a redirect to another origin (a presigned S3 URL): the API key must not travel there.
    authenticated: bool = True
    # False for /ready: its 503 is the answer asked for, not a reason to wait.
    retry: bool = True

    # False for a redirect's target: one hop is followed, never a chain.
    follow: bool = True

    @property
    def idempotent(self) -> bool:
        return self.method in ("GET", "HEAD")

    def redirected(self, response: httpx.Response) -> Call[T] | None:
        """The GET that follows a redirect (presigned downloads answer 307); None when there is none to follow.

        Only GETs follow, once, and without the key when the target is another origin (the S3 bucket)."""
        if not response.is_redirect:
            return None
        if not self.follow or self.method != "GET":
            raise _unexpected_redirect(response)
        target = response.url.join(response.headers["location"])
        origin = (target.scheme, target.host, target.port)
        same_origin = origin == (response.url.scheme, response.url.host, response.url.port)
        return Call("GET", str(target), self.parse, authenticated=same_origin and self.authenticated, follow=False)

    def read(self, response: httpx.Response) -> T:
        if response.is_redirect:
            raise _unexpected_redirect(response)
        try:
            return self.parse(response)
        except (ValueError, KeyError) as exc:  # pydantic's ValidationError is a ValueError
            # Something else answers at this URL (another service, a proxy's page): say so, not a traceback.
            raise SdxlError(
                f"unexpected answer to {self.method} {self.url}: {str(exc).splitlines()[0]}",
                status_code=response.status_code,
                type="bad_response",
            ) from exc


def _unexpected_redirect(response: httpx.Response) -> SdxlError:
    location = response.headers.get("location")
    return SdxlError(
        f"unexpected redirect to {location} (is the base URL right?)", status_code=response.status_code, type="redirect"
    )


def _model(cls: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: cls.model_validate_json(response.content)


def _nothing(response: httpx.Response) -> None:
    return None


def _content(response: httpx.Response) -> bytes:
    return response.content


def _png(response: httpx.Response) -> PngImage:
    return PngImage(response.content, response.headers["x-image-id"], int(response.headers["x-seed"]))


def _path(template: str, value: str) -> str:
    # Ids become one path segment whatever they hold ("../x" must not walk the URL); the service checks them.
    return template.format(quote(value, safe=""))


def generate(prompt: str, fields: Mapping[str, Any]) -> Call[ImageResponse]:
    return Call("POST", "/generate", _model(ImageResponse), request_body({"prompt": prompt, **fields}))


def generate_png(prompt: str, fields: Mapping[str, Any]) -> Call[PngImage]:
    body = request_body({"prompt": prompt, **fields})
    return Call("POST", "/generate", _png, body, headers={"Accept": "image/png"})


def submit(prompt: str, fields: Mapping[str, Any]) -> Call[JobResponse]:
    body = request_body({"prompt": prompt, **fields})
    return Call("POST", "/generate", _model(JobResponse), body, headers=PREFER_ASYNC)


def refine(image_id: str, prompt: str, fields: Mapping[str, Any]) -> Call[ImageResponse]:
    body = request_body({"id": image_id, "prompt": prompt, **fields})
    return Call("POST", "/refine", _model(ImageResponse), body)


def submit_refine(image_id: str, prompt: str, fields: Mapping[str, Any]) -> Call[JobResponse]:
    body = request_body({"id": image_id, "prompt": prompt, **fields})
    return Call("POST", "/refine", _model(JobResponse), body, headers=PREFER_ASYNC)


def img2img(prompt: str, fields: Mapping[str, Any]) -> Call[ImageResponse]:
    return Call("POST", "/img2img", _model(ImageResponse), request_body({"prompt": prompt, **fields}))


def inpaint(prompt: str, fields: Mapping[str, Any]) -> Call[ImageResponse]:
    return Call("POST", "/inpaint", _model(ImageResponse), request_body({"prompt": prompt, **fields}))


def job(job_id: str) -> Call[JobResponse]:
    return Call("GET", _path("/jobs/{}", job_id), _model(JobResponse))


def cancel_job(job_id: str) -> Call[JobResponse]:
    return Call("DELETE", _path("/jobs/{}", job_id), _model(JobResponse))


def job_events(job_id: str) -> Call[None]:
    # Read as a stream by the clients; `parse` is never called.
    return Call("GET", _path("/jobs/{}/events", job_id), _nothing, headers={"Accept": "text/event-stream"})


def download(image_id: str) -> Call[bytes]:
    return Call("GET", _path("/download/{}", image_id), _content)


def images(limit: int | None, cursor: str | None) -> Call[ImagesPage]:
    query = {name: value for name, value in (("limit", limit), ("cursor", cursor)) if value is not None}
    return Call("GET", "/images" + (f"?{urlencode(query)}" if query else ""), _model(ImagesPage))


def delete_image(image_id: str) -> Call[None]:
    return Call("DELETE", _path("/images/{}", image_id), _nothing)


def health() -> Call[HealthResponse]:
    return Call("GET", "/health", _model(HealthResponse))


def ready() -> Call[ReadyResponse]:
    return Call("GET", "/ready", _model(ReadyResponse), retry=False)


def models() -> Call[ModelsResponse]:
    return Call("GET", "/models", _model(ModelsResponse))
