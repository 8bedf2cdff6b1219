"""Ids are checked strictly before any storage access: no request reaches a file outside the store."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer
from tests.helpers import assert_error

TRAVERSALS = [
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "....//....//etc/passwd",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "..\\..\\windows\\win.ini",
    "0" * 31,
    "0" * 33,
    "A" * 32,
    "0" * 32 + ".png",
    "0" * 32 + "%00",
    "0" * 32 + "%0a",
    "secret",
    "images",
    "%20",
]


@pytest.mark.parametrize("raw", TRAVERSALS)
def test_download_rejects_anything_but_a_well_formed_id(client: httpx.Client, raw: str) -> None:
    r = client.get(f"/download/{raw}")
    assert 400 <= r.status_code < 500, r.status_code
    assert r.headers["content-type"].startswith("application/json")
    assert b"root:" not in r.content and b"PNG" not in r.content


@pytest.mark.parametrize("raw", [t for t in TRAVERSALS if "%" not in t] + ["../" + "0" * 32])
def test_refine_rejects_bad_ids(client: httpx.Client, raw: str) -> None:
    assert_error(client.post("/refine", json={"id": raw, "prompt": "x"}), 422, "invalid_request", "id")


def test_a_png_outside_the_store_is_never_served(client: httpx.Client, server: LiveServer, tmp_path: Path) -> None:
    # A file right next to the store with an id-like name must stay unreachable.
    outside = Path(server.settings.image_dir).parent / ("f" * 32 + ".png")
    outside.write_bytes(b"\x89PNG secret")
    try:
        for raw in ["..%2F" + "f" * 32, "../" + "f" * 32]:
            assert client.get(f"/download/{raw}").status_code in (404, 422)
    finally:
        outside.unlink()
