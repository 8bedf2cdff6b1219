from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse

from app.api.deps import ServiceDep, StoreDep
from app.api.response_docs import ERRORS
from app.errors import NotFound
from app.schemas import ErrorResponse, ImagesPage
from app.storage.base import PRESIGN_EXPIRY_S
from app.storage.ids import check_id
from app.storage.listing import DEFAULT_PAGE, MAX_PAGE

router = APIRouter(tags=["images"])


def download_path(image_id: str) -> str:
    """Where a stored image is downloaded: the engine's `image.stored` events carry it."""
    return f"/download/{image_id}"


# Images never change once stored, so clients and caches may keep them for a year.
_CACHE_FOREVER = "max-age=31536000, immutable"


_DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
    304: {"description": "Not modified (If-None-Match)"},
    307: {"description": "With presigned downloads (S3): the image's time-limited URL in `Location`"},
    404: {"model": ErrorResponse, "description": "Unknown image id"},
    **ERRORS,
}


async def download(id: str, request: Request, store: StoreDep) -> Response:  # noqa: A002 - the API's name
    image_id = check_id(id)
    etag = f'"{image_id}"'
    # With auth on, only the client's own cache may keep it, never a shared proxy.
    scope = "private, " if request.app.state.auth_enabled else "public, "
    headers = {"ETag": etag, "Cache-Control": scope + _CACHE_FOREVER}
    if _none_match(request.headers.get("if-none-match"), etag) and await store.exists(image_id):
        return Response(status_code=304, headers=headers)
    if url := await store.presigned_url(image_id):
        # The URL expires, so the redirect may be cached only while it is valid, with a minute to spare.
        headers["Cache-Control"] = f"{scope}max-age={PRESIGN_EXPIRY_S - 60}"
        return RedirectResponse(url, status_code=307, headers=headers)
    data = await store.get(image_id)
    headers["Content-Disposition"] = f'attachment; filename="{image_id}.png"'
    return Response(data, media_type="image/png", headers=headers)


# `/download/{id}.png` first: `/download/{id}` would take "<id>.png" as the id. The .png form is the URL OpenAI
# clients get (LibreChat takes the file's extension from the URL's path).
for path, name, summary in (
    ("/download/{id}.png", "download_png", "Download a stored PNG (the same, as a .png URL)"),
    ("/download/{id}", "download", "Download a stored PNG"),
):
    router.add_api_route(
        path,
        download,
        methods=["GET"],
        response_class=Response,
        responses=_DOWNLOAD_RESPONSES,
        summary=summary,
        name=name,
    )
    # HEAD runs the same handler (uvicorn drops the body); kept out of the schema, whose operation ids are unique.
    router.add_api_route(path, download, methods=["HEAD"], include_in_schema=False, name=f"{name}_head")


@router.get(
    "/images",
    response_model=ImagesPage,
    responses={422: {"model": ErrorResponse, "description": "A bad limit or cursor"}, **ERRORS},
    summary="List stored images, newest first, with their provenance",
)
async def list_images(
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Images per page.")] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page.")] = None,
) -> dict[str, Any]:
    """Every replica lists the same store. Pages follow a cursor, not an offset: images stored or deleted between two
    requests shift no page. Each image's provenance is read from its PNG, so a page holds at most 100."""
    return await service.list_images(limit, cursor)


@router.delete(
    "/images/{id}",
    status_code=204,
    response_class=Response,
    responses={404: {"model": ErrorResponse, "description": "Unknown image id"}, **ERRORS},
    summary="Delete a stored image",
)
async def delete_image(id: str, store: StoreDep) -> Response:  # noqa: A002 - the API's name
    """Removes the PNG; afterwards `/download/{id}` answers 404. Images derived from it (refines) stay."""
    if not await store.delete(check_id(id)):
        raise NotFound(f"no image with id {id}", field="id")
    return Response(status_code=204)


def _none_match(header: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match, weakly compared: `*`, or a list of tags where `W/"id"` matches `"id"` too (caches and
    proxies that compress a response weaken its tag)."""
    if header is None:
        return False
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)
