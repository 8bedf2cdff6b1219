"""Annotated dependencies the routes declare: the service and the store live on app.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.engine.service import ImageService
from app.storage.base import ImageStore


def get_service(request: Request) -> ImageService:
    service: ImageService = request.app.state.service
    return service


def get_store(request: Request) -> ImageStore:
    store: ImageStore = request.app.state.store
    return store


ServiceDep = Annotated[ImageService, Depends(get_service)]
StoreDep = Annotated[ImageStore, Depends(get_store)]
