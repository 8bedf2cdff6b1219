"""Every request body's example in /openapi.json (what /docs' "Try it out" starts from) runs as it is on the served
model (issue 15): it used to name random models, schedulers, VAEs, LoRAs and ControlNets and answer 422."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.config import Settings
from app.main import create_app
from tests.conftest import LiveServer


def _resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    if ref := schema.get("$ref"):
        resolved: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
        return resolved
    return schema


def _json_bodies(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """path -> the request body schema of every POST that takes JSON."""
    bodies = {}
    for path, operations in document["paths"].items():
        content = operations.get("post", {}).get("requestBody", {}).get("content", {})
        if "application/json" in content:
            bodies[path] = _resolve(content["application/json"]["schema"], document)
    return bodies


def test_every_json_body_has_an_example_that_runs(server: LiveServer) -> None:
    with server.client() as c:
        document = c.get("/openapi.json").json()
        bodies = _json_bodies(document)
        assert {"/generate", "/img2img", "/inpaint", "/refine", "/v1/images/generations"} <= set(bodies)
        assert {"/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/png-info"} <= set(bodies)
        generated = c.post("/generate", json=bodies["/generate"]["examples"][0])
        assert generated.status_code == 200, generated.text
        for path, schema in bodies.items():
            if path == "/sdapi/v1/options":  # any object: {} is its whole body
                continue
            assert schema.get("examples"), f"{path} has no example"
            body = dict(schema["examples"][0])
            if path == "/refine":
                # The one example that cannot run as it is: it must name an image this server stored.
                assert body["id"] == "0" * 32
                assert c.post(path, json=body).status_code == 404
                body["id"] = generated.json()["id"]
            r = c.post(path, json=body)
            assert 200 <= r.status_code < 300, (path, r.text[:500])


def test_field_and_nested_examples_run_too(server: LiveServer) -> None:
    """The nested references name the served family's built-ins (tiny-lora, tiny-controlnet here), and a field's own
    example (OpenAI's size) is accepted where it stands."""
    with server.client() as c:
        document = c.get("/openapi.json").json()
        schemas = document["components"]["schemas"]
        body = {
            **schemas["GenerateRequest"]["examples"][0],
            "loras": schemas["LoraRef"]["examples"],
            "controlnet": schemas["ControlNetRef"]["examples"][0],
        }
        assert body["loras"] == [{"name": "tiny-lora", "scale": 0.8}]
        r = c.post("/generate", json=body)
        assert r.status_code == 200, r.text
        ensemble = {**schemas["GenerateRequest"]["examples"][0], "refine": schemas["EnsembleRefine"]["examples"][0]}
        assert c.post("/generate", json=ensemble).status_code == 200
        size = schemas["OpenAIImageRequest"]["properties"]["size"]["examples"][0]
        openai = {**schemas["OpenAIImageRequest"]["examples"][0], "size": size, "response_format": "url"}
        r = c.post("/v1/images/generations", json=openai)
        assert r.status_code == 200, r.text


def test_an_sdxl_server_names_sdxl_entries(tmp_path: Path) -> None:
    # The document of a server whose default is SDXL (built without starting it: no weights here).
    document = create_app(Settings(model="sdxl-base", image_dir=tmp_path)).openapi()
    schemas = document["components"]["schemas"]
    assert schemas["ControlNetRef"]["examples"][0]["name"] == "canny-sdxl"
    assert "examples" not in schemas["LoraRef"]  # no LoRA ships for SDXL: they are the operator's files
