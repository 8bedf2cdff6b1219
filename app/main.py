"""The one wiring point: `create_app(settings)` builds the app; its lifespan starts and stops the engine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api.a1111.checkpoints import Checkpoints
from app.api.errors import install_error_handlers
from app.api.middleware.auth import ApiKeyMiddleware
from app.api.middleware.body_limit import BodyLimitMiddleware
from app.api.middleware.large_bodies import LargeBodySlotsMiddleware
from app.api.middleware.request_log import RequestLogMiddleware
from app.api.openapi import document_auth
from app.api.routes import (
    a1111_images,
    a1111_info,
    docs,
    edit,
    generate,
    health,
    images,
    jobs,
    metrics,
    models,
    openai_edits,
    openai_images,
    refine,
    ui,
)
from app.config import TINY_MODELS, Settings
from app.engine import ImageService
from app.events.factory import build_events
from app.storage.factory import build_store

logger = logging.getLogger(__name__)


def create_app(settings: Settings, *, on_fatal: Callable[[], None] | None = None) -> FastAPI:
    """Build the service. `on_fatal` is called if the store cannot open or the base model cannot be loaded (the CLI
    exits then)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store, events = build_store(settings), build_events(settings)
        await events.start()
        service = ImageService(settings, store, events, on_fatal=on_fatal, download_path=images.download_path)
        app.state.service, app.state.store = service, store
        # Open the store and load in the background so /health answers (and /ready says 503) meanwhile; a store
        # that cannot open (a missing bucket) fails startup like a model that cannot load.
        loading = asyncio.create_task(service.start(), name="load-base")
        try:
            yield
        finally:
            await service.stop()
            loading.cancel()
            await events.close()
            await store.close()

    app = FastAPI(
        title="sdxl-serve",
        summary="A small, secure Stable Diffusion XL image service.",
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's own pages load Swagger UI from a CDN; routes/docs.py serves it from the service (SDXL_DOCS).
        docs_url=None,
        redoc_url=None,
        openapi_url=None if settings.docs == "off" else docs.OPENAPI_PATH,
    )
    app.state.auth_enabled = bool(settings.api_keys)
    app.state.a1111 = Checkpoints()  # the A1111 surface's current checkpoint and in-flight jobs
    document_auth(app, app.state.auth_enabled, family="tiny" if settings.model in TINY_MODELS else "sdxl")
    install_error_handlers(app)
    routers = (generate, edit, refine, images, jobs, models, openai_images, openai_edits, a1111_images, a1111_info)
    for module in (*routers, metrics, health, ui):
        app.include_router(module.router)
    if settings.docs != "off":
        app.include_router(docs.router)
    # Order matters: the request log wraps auth, so refused requests are logged too.
    # Inside auth: a refused request is answered 401 without its body being read at all. Innermost, the slots
    # for large bodies: a body refused for its size or by auth never takes one.
    app.add_middleware(
        LargeBodySlotsMiddleware,
        slots=settings.max_large_bodies,
        small_bytes=settings.max_body_bytes,
        wait_s=settings.queue_timeout_s,
        paths=edit.UPLOAD_ROUTES + openai_edits.EDIT_ROUTES,
    )
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        upload_bytes=settings.max_upload_bytes,
        upload_paths=edit.UPLOAD_ROUTES + openai_edits.EDIT_ROUTES,
    )
    app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys, public_docs=settings.docs == "public")
    app.add_middleware(RequestLogMiddleware)
    return app
