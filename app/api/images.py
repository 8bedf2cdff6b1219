from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.deps import StoreDep
from app.api.shared import ERRORS
from app.schemas import ErrorResponse
from app.storage.ids import check_id

router = APIRouter(tags=["images"])

# Images never change once stored, so clients and caches may keep them for a year.
_CACHE_FOREVER = "max-age=31536000, immutable"


@router.api_route(
    "/download/{id}",
    methods=["GET", "HEAD"],
    response_class=Response,
    responses={
        200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
        304: {"description": "Not modified (If-None-Match)"},
        404: {"model": ErrorResponse, "description": "Unknown image id"},
        **ERRORS,
    },
    summary="Download a stored PNG",
)
async def download(id: str, request: Request, store: StoreDep) -> Response:  # noqa: A002 - the API's name
    image_id = check_id(id)
    etag = f'"{image_id}"'
    # With auth on, only the client's own cache may keep it, never a shared proxy.
    cache = ("private, " if request.app.state.auth_enabled else "public, ") + _CACHE_FOREVER
    headers = {"ETag": etag, "Cache-Control": cache}
    if request.headers.get("if-none-match") == etag and await store.exists(image_id):
        return Response(status_code=304, headers=headers)
    data = await store.get(image_id)
    headers["Content-Disposition"] = f'attachment; filename="{image_id}.png"'
    return Response(data, media_type="image/png", headers=headers)
