"""CORS is off by default: no browser origin is ever granted access to the API."""

from __future__ import annotations

import httpx

EVIL = "https://evil.example"


def test_preflight_grants_nothing(client: httpx.Client) -> None:
    r = client.options(
        "/generate",
        headers={
            "Origin": EVIL,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key",
        },
    )
    assert r.status_code != 200 or not r.headers.get("access-control-allow-methods")
    assert not any(k.lower().startswith("access-control-") for k in r.headers), dict(r.headers)


def test_simple_request_with_an_origin_grants_nothing(client: httpx.Client) -> None:
    for path in ("/health", "/ready", "/openapi.json"):
        r = client.get(path, headers={"Origin": EVIL})
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers
        assert "access-control-allow-credentials" not in r.headers
