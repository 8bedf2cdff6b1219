"""How an ImageResult leaves the service: JSON by default, the PNG itself when the client prefers it."""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from app.engine.service import ImageResult
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


def prefers_png(accept: str | None) -> bool:
    if not accept:
        return False
    png = _quality(accept, "image/png")
    return png > 0 and png >= _quality(accept, "application/json")


def image_response(request: Request, result: ImageResult) -> Response:
    request.state.timings = result.timings
    if prefers_png(request.headers.get("accept")):
        return Response(
            result.png,
            media_type="image/png",
            headers={"X-Image-Id": result.id, "X-Seed": str(result.seed)},
        )
    body = ImageResponse(
        id=result.id,
        seed=result.seed,
        width=result.width,
        height=result.height,
        model=result.model,
        parent_id=result.parent_id,
        timings=Timings(**result.timings),
    )
    return JSONResponse(body.model_dump())
