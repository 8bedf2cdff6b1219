"""How a finished job leaves the service: JSON by default, the PNG itself when the client prefers it,
or 202 with the job resource when the client asked to respond asynchronously."""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from app.api.routes.jobs import job_view
from app.engine import Engine, Job
from app.errors import InvalidRequest
from app.schemas import ImageResponse, Timings


def _quality(accept: str, media_type: str) -> float:
    for part in accept.split(","):
        kind, *params = (p.strip() for p in part.split(";"))
        if kind.lower() != media_type:
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    return float(value)
                except ValueError:
                    return 0.0
        return 1.0
    return 0.0


def prefers_png(request: Request) -> bool:
    accept = request.headers.get("accept")
    if not accept:
        return False
    png = _quality(accept, "image/png")
    return png > 0 and png >= _quality(accept, "application/json")


def wants_async(request: Request) -> bool:
    # RFC 7240: Prefer: respond-async (possibly among other preferences).
    prefer = request.headers.get("prefer", "")
    return any(p.split(";")[0].strip().lower() == "respond-async" for p in prefer.split(","))


def check_png_single(request: Request, count: int) -> None:
    if count > 1 and prefers_png(request) and not wants_async(request):
        raise InvalidRequest("Accept: image/png returns one image; use num_images=1 or JSON", field="num_images")


def accepted(request: Request, service: Engine, job: Job) -> JSONResponse:
    return JSONResponse(
        job_view(service, job),
        status_code=202,
        headers={"Location": f"/jobs/{job.id}", "Preference-Applied": "respond-async"},
    )


async def finished(request: Request, service: Engine, job: Job) -> Response:
    request.state.timings = job.timings
    first = job.images[0]
    if prefers_png(request):
        png = await service.png(first.id)
        return Response(png, media_type="image/png", headers={"X-Image-Id": first.id, "X-Seed": str(first.seed)})
    body = ImageResponse(
        id=first.id,
        seed=first.seed,
        width=first.width,
        height=first.height,
        images=[vars(i) for i in job.images],
        model=job.model,
        parent_id=job.parent_id,
        job_id=job.id,
        timings=Timings(**job.timings),
    )
    return JSONResponse(body.model_dump())
