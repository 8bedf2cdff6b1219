"""A body that is not JSON names the body and where it broke, not a character offset as a field (issue 13, item 12)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import tiny_settings


def test_a_json_syntax_error_names_the_body_and_the_offset(model_cache: Path, tmp_path: Path) -> None:
    with TestClient(create_app(tiny_settings(model_cache, tmp_path))) as c:
        r = c.post("/generate", content=b'{"prompt": "x",, }', headers={"content-type": "application/json"})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["field"] == "body" and error["details"] == [
        {"field": "body", "message": error["details"][0]["message"]}
    ]
    assert "is not valid JSON at character 15" in error["message"] and "Expecting property name" in error["message"]
