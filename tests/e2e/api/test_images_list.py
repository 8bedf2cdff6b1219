"""GET /images on a real server: stored images newest first with the provenance inside each PNG, cursor paging, the
error shape for bad paging, on local disk and on a real S3 server (SeaweedFS on loopback)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, start_server, tiny_settings
from tests.helpers import assert_error
from tests.s3_server import S3Server


@pytest.fixture(scope="module", params=["local", "s3"])
def served(
    request: pytest.FixtureRequest, model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    overrides: dict[str, Any] = {}
    if request.param == "s3":
        s3_server: S3Server = request.getfixturevalue("s3_server")
        overrides = s3_server.settings()
    live = start_server(tiny_settings(model_cache, tmp_path_factory.mktemp("img"), **overrides))
    yield live
    live.stop()


def _list(c: httpx.Client, **params: Any) -> dict[str, Any]:
    r = c.get("/images", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_images_newest_first_with_provenance_and_paging(served: LiveServer) -> None:
    with served.client() as c:
        assert _list(c) == {"images": [], "next_cursor": None}
        gen = c.post(
            "/generate", json={"prompt": "a lighthouse", "negative_prompt": "fog", "seed": 5, "num_images": 2}
        ).json()
        if served.settings.storage == "s3":
            time.sleep(1.1)  # S3's LastModified has whole seconds: without this the order within one is by id
        refined = c.post("/refine", json={"id": gen["id"], "prompt": "a lighthouse, sharp", "seed": 8}).json()

        whole = _list(c, limit=100)
        assert whole["next_cursor"] is None
        listed = {image["id"]: image for image in whole["images"]}
        assert set(listed) == {gen["images"][0]["id"], gen["images"][1]["id"], refined["id"]}
        assert whole["images"][0]["id"] == refined["id"]  # the newest
        first = listed[gen["id"]]["provenance"]
        assert first["kind"] == "generate" and first["prompt"] == "a lighthouse" and first["negative_prompt"] == "fog"
        assert first["seed"] == 5 and first["model"] == "tiny" and first["parent_id"] is None
        assert listed[gen["images"][1]["id"]]["provenance"]["seed"] == 6
        child = listed[refined["id"]]["provenance"]
        assert child["kind"] == "refine" and child["parent_id"] == gen["id"] and child["seed"] == 8
        png = c.get(f"/download/{refined['id']}").content
        assert listed[refined["id"]]["size"] == len(png)

        seen, cursor = [], None
        while True:
            page = _list(c, limit=1, **({"cursor": cursor} if cursor else {}))
            assert len(page["images"]) == 1
            seen += page["images"]
            if (cursor := page["next_cursor"]) is None:
                break
        assert seen == whole["images"]

        assert c.delete(f"/images/{refined['id']}").status_code == 204
        assert refined["id"] not in {image["id"] for image in _list(c)["images"]}


def test_bad_paging_is_a_422_naming_the_field(served: LiveServer) -> None:
    with served.client() as c:
        for limit in ("0", "101", "x"):
            error = assert_error(c.get("/images", params={"limit": limit}), 422, "invalid_request", field="limit")
            assert "limit" in error["message"], error
        for cursor in ("x", "WzEsMl0", "A" * 201):
            assert_error(c.get("/images", params={"cursor": cursor}), 422, "invalid_request", field="cursor")
