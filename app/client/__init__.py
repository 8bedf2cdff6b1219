"""A typed Python client for sdxl-serve, blocking (`Client`) and asyncio (`AsyncClient`), on httpx.

    from app.client import Client
    with Client("http://127.0.0.1:8000", api_key="...") as sdxl:
        result = sdxl.generate("a lighthouse at dusk", seed=42, num_images=2)
        png = sdxl.download(result.images[1].id, "second.png")

Importing it loads httpx and pydantic only: no torch, no FastAPI, nothing from the server's engine.
"""

from app.client.async_ import AsyncClient
from app.client.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    QueueFullError,
    SdxlConnectionError,
    SdxlError,
    SdxlTimeoutError,
    ServerError,
    StorageFullError,
    UnavailableError,
    error_from_job,
)
from app.client.models import (
    HealthResponse,
    ImageInfo,
    ImageResponse,
    ImagesPage,
    JobResponse,
    ModelInfo,
    ModelsResponse,
    PngImage,
    ReadyResponse,
    StoredImageInfo,
    is_terminal,
)
from app.client.retry import RetryPolicy
from app.client.sync import Client

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "HealthResponse",
    "ImageInfo",
    "ImageResponse",
    "ImagesPage",
    "InvalidRequestError",
    "JobResponse",
    "ModelInfo",
    "ModelsResponse",
    "NotFoundError",
    "PayloadTooLargeError",
    "PngImage",
    "QueueFullError",
    "ReadyResponse",
    "RetryPolicy",
    "SdxlConnectionError",
    "SdxlError",
    "SdxlTimeoutError",
    "ServerError",
    "StorageFullError",
    "StoredImageInfo",
    "UnavailableError",
    "error_from_job",
    "is_terminal",
]
