"""Annotated dependencies the routes declare: the service and the store live on app.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.engine import Engine
from app.storage.base import ImageStore


def get_service(request: Request) -> Engine:
    service: Engine = request.app.state.service
    return service


def get_store(request: Request) -> ImageStore:
    store: ImageStore = request.app.state.store
    return store


ServiceDep = Annotated[Engine, Depends(get_service)]
StoreDep = Annotated[ImageStore, Depends(get_store)]
