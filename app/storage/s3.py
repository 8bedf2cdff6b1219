"""S3 image store (AWS S3 or any S3-compatible server: SeaweedFS, MinIO, ...), shared by every replica.

Keys: `{prefix}images/{id}.png` for images, `{prefix}{record name}` for job records. A PutObject is atomic,
and image puts carry `If-None-Match: *`, so an id is never overwritten. boto3 blocks, so each call runs in a
worker thread (a client is thread-safe). Timeouts and retries are bounded: an S3 outage becomes a 503 within
seconds instead of requests hanging. Age retention is a bucket lifecycle rule's job, not this code's.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from app.config import Settings
from app.errors import NotFound, ServiceError, StorageUnavailable
from app.storage.base import PRESIGN_EXPIRY_S
from app.storage.ids import check_id, check_record_name, is_valid_id
from app.storage.listing import ImagePage, StoredImage, page_of

T = TypeVar("T")

_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})  # HEAD answers carry no body, so only "404"
_CACHE_FOREVER = "max-age=31536000, immutable"  # what a presigned download then answers with


class _AlreadyExists(ServiceError):
    """If-None-Match refused the write: the key holds an object already."""


class S3ImageStore:
    def __init__(self, client: Any, bucket: str, prefix: str = "", *, presign: bool = False):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.presign = presign

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ImageStore:
        assert settings.s3_bucket is not None  # Settings refuses storage=s3 without a bucket
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if settings.s3_path_style else "auto"},
            connect_timeout=3,
            read_timeout=5,
            retries={"max_attempts": 2, "mode": "standard"},  # two retries, then the request fails
        )
        key_id, secret = settings.s3_access_key_id, settings.s3_secret_access_key
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            # Both unset: boto3's default chain (environment, profile, instance role).
            aws_access_key_id=key_id.get_secret_value() if key_id else None,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=config,
        )
        return cls(client, settings.s3_bucket, settings.s3_prefix, presign=settings.s3_presign_downloads)

    def _image_key(self, image_id: str) -> str:
        return f"{self.prefix}images/{check_id(image_id)}.png"

    def _record_key(self, name: str) -> str:
        return f"{self.prefix}{check_record_name(name)}"

    async def _call(self, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(fn, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise _translate(exc, what) from exc

    # --- lifecycle ----------------------------------------------------------------------------------
    async def open(self) -> None:
        where = f"S3 bucket {self.bucket!r} at {self.client.meta.endpoint_url}"
        try:
            await self._call("reach the bucket", self.client.head_bucket, Bucket=self.bucket)
        except NotFound:
            raise StorageUnavailable(f"{where} does not exist; create it or fix SDXL_S3_BUCKET") from None
        except StorageUnavailable as exc:
            raise StorageUnavailable(f"{where} is not usable: {exc.message}") from exc

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)

    # --- images -------------------------------------------------------------------------------------
    async def put(self, image_id: str, png: bytes, metadata: Mapping[str, str]) -> None:
        key = self._image_key(image_id)
        try:
            await self._call(
                "store an image",
                self.client.put_object,
                Bucket=self.bucket,
                Key=key,
                Body=png,
                ContentType="image/png",
                CacheControl=_CACHE_FOREVER,
                ContentDisposition=f'attachment; filename="{image_id}.png"',
                # S3 user metadata is ASCII only (a model path may not be).
                Metadata={k: v if v.isascii() else quote(v) for k, v in metadata.items()},
                IfNoneMatch="*",
            )
        except _AlreadyExists:
            # botocore retries a put whose answer was lost; if the first attempt landed, the retry is refused.
            # A single-part object's ETag is its MD5: equal bytes mean the object is this write.
            head = await self._call("check an image", self.client.head_object, Bucket=self.bucket, Key=key)
            if head.get("ETag", "").strip('"') != hashlib.md5(png, usedforsecurity=False).hexdigest():
                raise ServiceError(f"an image with id {image_id} exists already; it was not overwritten") from None

    async def get(self, image_id: str) -> bytes:
        try:
            return await self._call("read an image", self._read, key=self._image_key(image_id))
        except NotFound:
            raise NotFound(f"no image with id {image_id}", field="id") from None

    async def exists(self, image_id: str) -> bool:
        try:
            await self._call(
                "check an image", self.client.head_object, Bucket=self.bucket, Key=self._image_key(image_id)
            )
        except NotFound:
            return False
        return True

    async def delete(self, image_id: str) -> bool:
        # DeleteObject answers 204 whether or not the key existed, so ask first.
        if not await self.exists(image_id):
            return False
        await self._call(
            "delete an image", self.client.delete_object, Bucket=self.bucket, Key=self._image_key(image_id)
        )
        return True

    async def list_images(self, limit: int, cursor: str | None = None) -> ImagePage:
        # S3 lists keys in name order and ids are random, so newest-first means listing every image key (1,000 per
        # ListObjectsV2 call) and sorting here: fine for tens of thousands of images, not for millions.
        images = await self._call("list images", self._list_all)
        return page_of(images, limit, cursor)

    def _list_all(self) -> list[StoredImage]:
        prefix = f"{self.prefix}images/"
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(prefix) :]
                image_id, dot, ext = name.partition(".")
                if dot and ext == "png" and is_valid_id(image_id):
                    found.append(StoredImage(image_id, obj["LastModified"].timestamp(), int(obj["Size"])))
        return found

    async def read_start(self, image_id: str, max_bytes: int) -> bytes:
        key = self._image_key(image_id)
        try:
            return await self._call("read an image", self._read, key=key, range_=f"bytes=0-{max_bytes - 1}")
        except NotFound:
            raise NotFound(f"no image with id {image_id}", field="id") from None

    async def presigned_url(self, image_id: str) -> str | None:
        if not self.presign:
            return None
        if not await self.exists(image_id):  # a URL to nothing would be S3's 404, not ours
            raise NotFound(f"no image with id {image_id}", field="id")
        url: str = await self._call(
            "sign a download",
            self.client.generate_presigned_url,
            ClientMethod="get_object",
            Params={"Bucket": self.bucket, "Key": self._image_key(image_id)},
            ExpiresIn=PRESIGN_EXPIRY_S,
        )
        return url

    # --- records ------------------------------------------------------------------------------------
    async def put_record(self, name: str, data: bytes) -> None:
        key = self._record_key(name)
        await self._call(
            "store a record",
            self.client.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType="application/json",
        )

    async def get_record(self, name: str) -> bytes | None:
        try:
            return await self._call("read a record", self._read, key=self._record_key(name))
        except NotFound:
            return None

    def _read(self, key: str, range_: str | None = None) -> bytes:
        # Reading the body is blocking network I/O too, so it happens in the same worker thread.
        extra = {"Range": range_} if range_ else {}
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=key, **extra)["Body"].read()
        return body


def _translate(exc: BotoCoreError | ClientError, what: str) -> ServiceError:
    """The one place that decides what an S3 failure means. Messages name no key, secret or signature."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "error"))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        if code in _NOT_FOUND:
            return NotFound("not found")
        if code == "PreconditionFailed":
            return _AlreadyExists("the key exists already")
        return StorageUnavailable(f"the S3 store could not {what} ({code}, HTTP {status})")
    return StorageUnavailable(f"the S3 store could not {what} ({type(exc).__name__})")
