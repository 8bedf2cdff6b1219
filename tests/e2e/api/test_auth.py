"""API-key auth: three header forms, constant-time comparison, refusals, public health routes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.api.middleware.auth import key_matches
from tests.conftest import LiveServer, start_server, tiny_settings
from tests.helpers import assert_error

KEY, OTHER = "s3cret-key-1", "second-key-2"


@pytest.fixture(scope="module")
def secured(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = tiny_settings(model_cache, tmp_path_factory.mktemp("img"), generation_auth_key=f"{KEY}, {OTHER}")
    live = start_server(settings)
    yield live
    live.stop()


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": KEY},
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": f"bearer {OTHER}"},
        {"X-API-Key": KEY},
        {"X-API-Key": OTHER, "Authorization": "Bearer dstack-own-token"},  # behind dstack's proxy
    ],
)
def test_accepted_header_forms(secured: LiveServer, headers: dict[str, str]) -> None:
    with secured.client(headers=headers) as c:
        r = c.post("/generate", json={"prompt": "x", "seed": 1})
        assert r.status_code == 200, r.text
        d = c.get(f"/download/{r.json()['id']}")
        assert d.status_code == 200 and d.headers["cache-control"].startswith("private")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "wrong"},
        {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": f"Basic {KEY}"},
        {"X-API-Key": KEY[:-1]},
        {"X-API-Key": ""},
        {"Authorization": f"{KEY},{OTHER}"},
    ],
)
def test_refused(secured: LiveServer, headers: dict[str, str]) -> None:
    with secured.client(headers=headers) as c:
        for method, path in [
            ("POST", "/generate"),
            ("POST", "/refine"),
            ("GET", "/download/" + "0" * 32),
            ("GET", "/redoc"),  # not served: an unknown path is refused like any other
            ("GET", "/nope"),
        ]:
            r = c.request(method, path, json={"prompt": "x"} if method == "POST" else None)
            assert_error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer")


def test_refusal_comes_before_validation(secured: LiveServer) -> None:
    with secured.client() as c:
        r = c.post("/generate", content=b"{not json", headers={"Content-Type": "application/json"})
        assert_error(r, 401, "unauthorized")


def test_health_and_ready_stay_public(secured: LiveServer) -> None:
    with secured.client() as c:
        assert c.get("/health").status_code == 200
        assert c.get("/ready").status_code == 200


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/health/../generate", {}),
        ("//generate", {}),
        ("/generate", {"Host": "127.0.0.1"}),
        ("/generate", {"X-Forwarded-Prefix": "/health"}),
        ("/GENERATE", {}),
    ],
)
def test_path_and_host_tricks_do_not_bypass(secured: LiveServer, path: str, headers: dict[str, str]) -> None:
    with secured.client(headers=headers) as c:
        r = c.post(path, json={"prompt": "x"})
        assert r.status_code == 401


def test_key_matches_checks_every_candidate() -> None:
    assert key_matches(["a", "k"], ("k",))
    assert not key_matches(["a", "b"], ("k",))
    assert not key_matches([], ("k",))


def test_the_schema_declares_the_key(secured: LiveServer, server: LiveServer) -> None:
    """/docs and generated clients learn that a key is needed (and where), but only where one is configured."""
    with secured.client(headers={"X-API-Key": KEY}) as c:
        schema = c.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["ApiKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    assert schema["security"] == [{"ApiKeyHeader": []}, {"Bearer": []}]
    assert schema["paths"]["/health"]["get"]["security"] == [] and schema["paths"]["/ready"]["get"]["security"] == []
    assert "security" not in schema["paths"]["/generate"]["post"]  # the document-wide requirement applies
    with server.client() as c:
        assert "security" not in c.get("/openapi.json").json()
