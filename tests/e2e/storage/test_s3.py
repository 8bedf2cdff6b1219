"""The S3 store against a real S3 server (SeaweedFS on loopback), signatures checked."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from app.config import Settings
from app.errors import InvalidId, NotFound, ServiceError, StorageUnavailable
from app.storage.ids import new_id
from app.storage.s3 import S3ImageStore
from tests.s3_server import S3Server, _free_port


def _store(s3_server: S3Server, **overrides: Any) -> S3ImageStore:
    return S3ImageStore.from_settings(Settings(**s3_server.settings(**overrides)))


@pytest.fixture
async def store(s3_server: S3Server) -> AsyncIterator[S3ImageStore]:
    store = _store(s3_server)
    await store.open()
    yield store
    await store.close()


async def test_round_trip(store: S3ImageStore, s3_server: S3Server) -> None:
    image_id = new_id()
    assert not await store.exists(image_id)
    await store.put(image_id, b"png-bytes", {"kind": "generate", "seed": "7", "model": "/models/sdxl-é"})
    assert await store.get(image_id) == b"png-bytes"
    assert await store.exists(image_id)

    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=f"{store.prefix}images/{image_id}.png")
    assert head["ContentType"] == "image/png"
    assert head["Metadata"] == {"kind": "generate", "seed": "7", "model": "/models/sdxl-%C3%A9"}  # S3 is ASCII-only

    assert await store.delete(image_id)
    assert not await store.exists(image_id)
    assert not await store.delete(image_id)
    with pytest.raises(NotFound):
        await store.get(image_id)


async def test_an_id_is_never_overwritten(store: S3ImageStore) -> None:
    image_id = new_id()
    await store.put(image_id, b"first", {})
    await store.put(image_id, b"first", {})  # what a retry of a put that landed looks like: accepted
    with pytest.raises(ServiceError, match="exists already"):
        await store.put(image_id, b"second", {})
    assert await store.get(image_id) == b"first"


async def test_records(store: S3ImageStore, s3_server: S3Server) -> None:
    name = f"jobs/{new_id()}.json"
    assert await store.get_record(name) is None
    await store.put_record(name, b'{"status": "queued"}')
    await store.put_record(name, b'{"status": "succeeded"}')  # records are overwritten, unlike images
    assert await store.get_record(name) == b'{"status": "succeeded"}'
    keys = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=store.prefix)["Contents"]
    assert [k["Key"] for k in keys] == [f"{store.prefix}{name}"]
    for bad in ["../jobs/x.json", "jobs/x.json", f"jobs/{new_id()}.png"]:
        with pytest.raises(ValueError):
            await store.put_record(bad, b"{}")


async def test_malformed_ids_never_reach_s3(store: S3ImageStore) -> None:
    for bad in ["../x", "", "0" * 32 + "\n", "G" * 32]:
        with pytest.raises(InvalidId):
            await store.get(bad)


async def test_presigned_download(s3_server: S3Server) -> None:
    plain, presigning = _store(s3_server), _store(s3_server, s3_presign_downloads=True)
    image_id = new_id()
    await presigning.put(image_id, b"png-bytes", {})
    assert await plain.presigned_url(image_id) is None
    url = await presigning.presigned_url(image_id)
    assert url is not None and url.startswith(s3_server.endpoint) and "X-Amz-Signature=" in url
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == b"png-bytes"
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"] == f'attachment; filename="{image_id}.png"'
    with pytest.raises(NotFound):
        await presigning.presigned_url(new_id())


async def test_wrong_secret_is_unavailable_and_names_no_secret(s3_server: S3Server) -> None:
    store = _store(s3_server, s3_secret_access_key="not-the-secret")
    for call in (store.open(), store.get(new_id()), store.put(new_id(), b"x", {})):
        with pytest.raises(StorageUnavailable) as caught:
            await call
        message = caught.value.message
        assert "403" in message
        assert "not-the-secret" not in message and s3_server.access_key not in message


async def test_missing_bucket_fails_open_clearly(s3_server: S3Server) -> None:
    with pytest.raises(StorageUnavailable, match=r"bucket 'no-such-bucket' at http://127\.0\.0\.1:\d+ does not exist"):
        await _store(s3_server, s3_bucket="no-such-bucket").open()


async def test_server_down_is_unavailable_quickly(s3_server: S3Server) -> None:
    store = _store(s3_server, s3_endpoint_url=f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match="EndpointConnectionError"):
        await store.get(new_id())
    assert time.monotonic() - started < 10  # two retries with backoff, not a hang


def test_half_a_key_pair_is_refused_without_echoing_the_secret() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(storage="s3", s3_bucket="b", s3_secret_access_key="TOP-SECRET-VALUE")
    assert "set both SDXL_S3_ACCESS_KEY_ID and SDXL_S3_SECRET_ACCESS_KEY" in str(caught.value)
    assert "SECRET-VALUE" not in str(caught.value)  # the CLI prints this error as it is
