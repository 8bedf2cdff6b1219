"""The service on a real S3 server (SeaweedFS on loopback): the whole flow, presigned downloads, an outage."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, start_server, tiny_settings
from tests.helpers import assert_error, decode
from tests.s3_server import S3Server, start_seaweedfs

KEY = "s3-flow-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def presigning(
    model_cache: Path, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    overrides = s3_server.settings(s3_presign_downloads=True, generation_auth_key=KEY)
    live = start_server(tiny_settings(model_cache, tmp_path_factory.mktemp("unused"), **overrides))
    yield live
    live.stop()


def _record(s3_server: S3Server, prefix: str, job_id: str, timeout: float = 10) -> dict[str, Any]:
    """The job's record as S3 holds it, once it is terminal (it is written in the background)."""
    client, deadline = s3_server.client(), time.monotonic() + timeout
    while True:
        try:
            body = client.get_object(Bucket=s3_server.bucket, Key=f"{prefix}jobs/{job_id}.json")["Body"].read()
            record: dict[str, Any] = json.loads(body)
            if record["status"] in ("succeeded", "failed", "cancelled"):
                return record
        except client.exceptions.NoSuchKey:
            pass
        assert time.monotonic() < deadline, f"no terminal record for job {job_id}"
        time.sleep(0.05)


def test_generate_download_refine_delete(presigning: LiveServer, s3_server: S3Server) -> None:
    prefix = presigning.settings.s3_prefix
    with presigning.client(headers=AUTH) as c:
        gen = c.post("/generate", json={"prompt": "a lighthouse", "seed": 3})
        assert gen.status_code == 200, gen.text
        image_id, job_id = gen.json()["id"], gen.json()["job_id"]
        head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=f"{prefix}images/{image_id}.png")
        assert head["ContentType"] == "image/png"
        assert head["Metadata"] == {"kind": "generate", "model": "tiny", "seed": "3", "job-id": job_id}

        # Presigned: the service answers 307 to S3 itself; the client follows (httpx drops the API key there).
        r = c.get(f"/download/{image_id}")
        assert r.status_code == 307
        assert r.headers["location"].startswith(f"{s3_server.endpoint}/{s3_server.bucket}/{prefix}images/")
        assert r.headers["cache-control"] == "private, max-age=240"  # never beyond the URL's 300 s
        png = c.get(f"/download/{image_id}", follow_redirects=True)
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert decode(png.content).size == (256, 256)
        assert (
            png.content
            == c.post("/generate", json={"prompt": "a lighthouse", "seed": 3}, headers={"Accept": "image/png"}).content
        )  # the same request and seed: the same bytes, from S3 either way

        ref = c.post("/refine", json={"id": image_id, "prompt": "a lighthouse, sharp", "strength": 0.5})
        assert ref.status_code == 200, ref.text
        assert ref.json()["parent_id"] == image_id
        assert _record(s3_server, prefix, job_id)["images"][0]["id"] == image_id
        assert c.get(f"/jobs/{job_id}").json()["status"] == "succeeded"

        assert_error(httpx.delete(f"{presigning.url}/images/{image_id}"), 401, "unauthorized")
        assert c.delete(f"/images/{image_id}").status_code == 204
        assert_error(c.get(f"/download/{image_id}"), 404, "not_found")
        assert_error(c.delete(f"/images/{image_id}"), 404, "not_found")
        assert_error(c.post("/refine", json={"id": image_id, "prompt": "x"}), 404, "not_found")
        assert c.get(f"/download/{ref.json()['id']}", follow_redirects=True).status_code == 200


def test_s3_outage_is_503_quickly_and_health_stays(model_cache: Path, tmp_path: Path) -> None:
    weed = start_seaweedfs(tmp_path / "weed")  # a server of its own: this test stops it
    live = start_server(tiny_settings(model_cache, tmp_path / "unused", **weed.settings()))
    try:
        with live.client() as c:
            ok = c.post("/generate", json={"prompt": "x", "seed": 1})
            assert ok.status_code == 200, ok.text
            assert c.get(f"/download/{ok.json()['id']}").status_code == 200  # streamed: presigning is off

            weed.stop()
            started = time.monotonic()
            error = assert_error(c.post("/generate", json={"prompt": "x"}), 503, "storage_unavailable")
            assert time.monotonic() - started < 20  # bounded retries and timeouts, not a hang
            assert weed.secret_key not in error["message"] and weed.access_key not in error["message"]
            assert_error(c.get(f"/download/{ok.json()['id']}"), 503, "storage_unavailable")
            assert c.get("/health").status_code == 200
            assert c.get("/ready").status_code == 200  # storage is not the pipeline: keep taking work
    finally:
        live.stop()
        weed.stop()
