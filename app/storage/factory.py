"""Builds the configured image store."""

from __future__ import annotations

from app.config import Settings
from app.storage.base import ImageStore
from app.storage.local import LocalImageStore


def build_store(settings: Settings) -> ImageStore:
    if settings.storage == "s3":
        from app.storage.s3 import S3ImageStore  # boto3 is only imported when S3 is used

        return S3ImageStore.from_settings(settings)
    return LocalImageStore(
        settings.image_dir,
        max_bytes=int(settings.max_data_dir_size_gb * 1024**3),
        max_age_s=settings.max_image_age_s,
    )
