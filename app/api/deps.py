"""Annotated dependencies the routes declare: the service, the store and the A1111 surface's state live on app.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.a1111.checkpoints import Checkpoints
from app.engine import Engine
from app.storage.base import ImageStore


def get_service(request: Request) -> Engine:
    service: Engine = request.app.state.service
    return service


def get_store(request: Request) -> ImageStore:
    store: ImageStore = request.app.state.store
    return store


def get_checkpoints(request: Request) -> Checkpoints:
    checkpoints: Checkpoints = request.app.state.a1111
    return checkpoints


ServiceDep = Annotated[Engine, Depends(get_service)]
StoreDep = Annotated[ImageStore, Depends(get_store)]
CheckpointsDep = Annotated[Checkpoints, Depends(get_checkpoints)]
