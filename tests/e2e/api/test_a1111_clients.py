"""The A1111 API as the clients that do not install here use it: their request sequences, written down from their
source code in tests/fixtures/a1111/*.json, replayed against a real server without auth (so the empty
`Authorization: Basic ` that Open WebUI and SillyTavern always send must be ignored). Then the surface's edges:
forgiving parsing, errors in A1111's shape (never a 500), body limits."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from app.engine.images.metadata import read_provenance
from tests.conftest import LiveServer

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "a1111"
CLIENTS = sorted(FIXTURES.glob("*.json"))


def a1111_error(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """A1111's shape: its clients show `detail`; no traceback leaks."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail", "field", "errors"}, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert "Traceback" not in response.text and "/site-packages/" not in response.text
    if field is not None:
        assert body["field"] == field or field in {e["field"] for e in body["errors"]}, body
    return body


def _substitute(value: Any, found: dict[str, Any]) -> Any:
    text = json.dumps(value)
    for name, replacement in found.items():
        if isinstance(replacement, str):
            text = text.replace(f"${name}", replacement)
    return json.loads(text)


@pytest.mark.parametrize("fixture", CLIENTS, ids=[f.stem for f in CLIENTS])
def test_client_sequence_replays(fixture: Path, client: httpx.Client) -> None:
    script = json.loads(fixture.read_text())
    assert script["source"] and script["requests"]
    found: dict[str, Any] = {}
    for step in script["requests"]:
        # "Basic " arrives as "Basic": the server's HTTP parser strips a value's trailing space (and httpx will not
        # send one).
        kwargs: dict[str, Any] = {"headers": {k: v.rstrip() for k, v in step.get("headers", {}).items()}}
        if "raw" in step:  # sent as the client does: JSON text without a Content-Type
            kwargs["content"] = step["raw"].replace("$model_name", found.get("model_name", "")).encode()
        elif step.get("json") == "$options_with_checkpoint":
            kwargs["json"] = {**found["options"], "sd_model_checkpoint": found["title"]}  # the dict posted back whole
        elif "json" in step:
            kwargs["json"] = _substitute(step["json"], found)
        response = client.request(step["method"], step["path"], **kwargs)
        assert response.status_code == 200, (step["path"], response.text)
        body = response.json()
        for key in step.get("reads", []):
            assert key in body, (step["path"], key)
        for key in step.get("reads_each", []):
            assert all(key in entry for entry in body), (step["path"], key)
        if step.get("expect_idle"):
            assert body["progress"] == 0 and body["state"]["job_count"] == 0
        if step["path"].endswith("/options") and step["method"] == "GET":
            found["options"] = body
        if step["path"].endswith("/sd-models"):
            found["title"], found["model_name"] = body[0]["title"], body[0]["model_name"]
        if step["path"].endswith(("/txt2img", "/img2img")):
            png = base64.b64decode(body["images"][0])
            assert Image.open(io.BytesIO(png)).format == "PNG"
            found["last_image_data_url"] = "data:image/png;base64," + body["images"][0]
            info = json.loads(body["info"])  # LibreChat: JSON.parse(info)
            for key in step.get("info_reads", []):
                assert key in info, key
            assert info["infotexts"][0] == Image.open(io.BytesIO(png)).info["parameters"]
        if step["path"].endswith("/png-info"):  # the image the client just made: its prompt comes back
            prompt = next(s["json"]["prompt"] for s in script["requests"] if s["path"].endswith("/txt2img"))
            assert body["info"].startswith(prompt + "\n")


def test_sillytavern_txt2img_applies_lora_tag_and_karras_schedule(client: httpx.Client) -> None:
    script = json.loads((FIXTURES / "sillytavern.json").read_text())
    body = next(s["json"] for s in script["requests"] if s["path"].endswith("/txt2img"))
    response = client.post("/sdapi/v1/txt2img", json=body, headers={"Authorization": "Basic"})
    assert response.status_code == 200, response.text
    record = read_provenance(base64.b64decode(response.json()["images"][0]))
    assert record["loras"] == [{"name": "tiny-lora", "scale": 0.8}]
    assert record["scheduler"] == "dpmpp_2m_karras"
    assert record["prompt"] == "a knight,"  # the tag is taken out of the prompt
    info = json.loads(response.json()["info"])
    assert info["sampler_name"] == "DPM++ 2M Karras" and info["steps"] == 4 and info["cfg_scale"] == 7


def test_switching_the_checkpoint_applies_to_later_requests(client: httpx.Client) -> None:
    models = client.get("/sdapi/v1/sd-models").json()
    other = next(m for m in models if m["model_name"] == "tiny-b")
    for key in ("title", "model_name", "hash", "sha256"):  # matched by any of them
        assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": other[key]}).status_code == 200
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == other["title"]
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "p", "steps": 2, "width": 256, "height": 256})
    info = json.loads(response.json()["info"])
    assert info["sd_model_name"] == "tiny-b" and info["sd_model_hash"] == other["hash"]
    # A request's own override_settings win over the surface's checkpoint.
    response = client.post(
        "/sdapi/v1/txt2img",
        json={
            "prompt": "p",
            "steps": 2,
            "width": 256,
            "height": 256,
            "override_settings": {"sd_model_checkpoint": "tiny"},
        },
    )
    assert json.loads(response.json()["info"])["sd_model_name"] == "tiny"
    a1111_error(client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "nope"}), 422, "sd_model_checkpoint")
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": models[0]["title"]}).status_code == 200
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == models[0]["title"]


def test_unknown_fields_and_junk_are_ignored_numbers_taken_as_sent(client: httpx.Client) -> None:
    body = {
        "prompt": "p",
        "steps": 2.0,
        "cfg_scale": "6",
        "width": 260,  # rounded down to a multiple of 8, as A1111's latents are
        "height": 256.0,
        "seed": 7,
        "batch_size": 2,
        "n_iter": 2,
        "url": "http://x",
        "auth": "u:p",
        "alwayson_scripts": {"ControlNet": {"args": []}},
        "script_name": None,
        "hr_checkpoint_name": None,
        "sampler_index": "Euler",
    }
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["all_seeds"] == [7, 8, 9, 10] and len(response.json()["images"]) == 4
    assert (info["width"], info["height"], info["cfg_scale"], info["sampler_name"]) == (256, 256, 6.0, "Euler")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "p", "sampler_name": "DPM++ SDE"}, "sampler_name"),
        ({"prompt": "p", "sampler_name": "Euler a", "scheduler": "Karras"}, "scheduler"),
        ({"prompt": "p", "enable_hr": True}, "enable_hr"),
        ({"prompt": "p", "batch_size": 20}, "batch_size"),
        ({"prompt": "p", "steps": 1000}, "steps"),
        ({"prompt": "p", "steps": 2.5}, "steps"),
        ({"prompt": "p", "prompt_2": "ignored", "cfg_scale": 99}, "cfg_scale"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "p <lora:nope:1>"}, "prompt"),
        ({"prompt": "p", "override_settings": {"sd_vae": "nope"}}, "sd_vae"),
    ],
)
def test_refusals_name_the_a1111_field(client: httpx.Client, body: dict[str, Any], field: str) -> None:
    a1111_error(client.post("/sdapi/v1/txt2img", json=body), 422, field)


@pytest.mark.parametrize("number", ["1e999", "-1e999", "NaN", "Infinity"])
@pytest.mark.parametrize("field", ["seed", "steps", "batch_size", "n_iter", "width", "height"])
def test_a_number_with_no_whole_value_names_its_field(client: httpx.Client, field: str, number: str) -> None:
    """Python's json reads these as floats (inf, nan), which int() cannot take: a 422, not a 500."""
    body = b'{"prompt": "p", "%s": %s}' % (field.encode(), number.encode())
    route = "/sdapi/v1/txt2img" if field != "n_iter" else "/sdapi/v1/img2img"
    payload = body if route.endswith("txt2img") else body[:-1] + b', "init_images": ["%s"]}' % _png(256).encode()
    error = a1111_error(client.post(route, content=payload, headers={"Content-Type": "application/json"}), 422, field)
    assert "must be a whole number" in error["detail"], error
    assert client.get("/health").status_code == 200  # the connection was not dropped


def _header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with no pixel data: tiny, yet too large for Pillow to open."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_errors_are_a1111_shaped_never_500(client: httpx.Client) -> None:
    a1111_error(client.post("/sdapi/v1/txt2img", content=b"{not json"), 422)
    a1111_error(client.post("/sdapi/v1/txt2img", json=[1, 2]), 422)
    a1111_error(client.post("/sdapi/v1/options", content=b"[1]"), 422, "body")
    a1111_error(client.get("/sdapi/v1/no-such-route"), 404)
    a1111_error(client.post("/sdapi/v1/img2img", json={"prompt": "p"}), 422, "init_images")
    a1111_error(client.post("/sdapi/v1/img2img", json={"prompt": "p", "init_images": ["%%%"]}), 422, "init_images")
    a1111_error(client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(b"GIF89a").decode()}), 422, "image")
    bomb = base64.b64encode(_header_only_png(15_000, 15_000)).decode()  # 225 MP: over Pillow's 179 MP
    error = a1111_error(client.post("/sdapi/v1/png-info", json={"image": bomb}), 422, "image")
    assert "too many pixels; at most 178956970 can be read" in error["detail"], error


def _png(size: int, colour: str = "gray") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_img2img_and_inpainting(client: httpx.Client) -> None:
    image = _png(256)
    body = {"prompt": "p", "steps": 4, "init_images": [image], "denoising_strength": 0.5, "width": 256, "height": 256}
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    record = read_provenance(base64.b64decode(response.json()["images"][0]))
    assert (record["kind"], record["strength"]) == ("img2img", 0.5)
    assert response.json()["parameters"]["init_images"] is None  # as A1111: not sent back
    response = client.post("/sdapi/v1/img2img", json={**body, "mask": "data:image/png;base64," + _png(256, "white")})
    assert read_provenance(base64.b64decode(response.json()["images"][0]))["kind"] == "inpaint"
    a1111_error(client.post("/sdapi/v1/img2img", json={**body, "inpainting_mask_invert": 1}), 422)


def test_img2img_may_carry_an_image_txt2img_may_not(client: httpx.Client) -> None:
    """/sdapi/v1/img2img is an upload route (SDXL_MAX_UPLOAD_BYTES); txt2img keeps SDXL_MAX_BODY_BYTES."""
    noise = Image.frombytes("RGB", (700, 700), os.urandom(700 * 700 * 3))  # incompressible: ~1.5 MB of PNG
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    big = base64.b64encode(buffer.getvalue()).decode()
    assert len(big) > 1024 * 1024
    body = {"prompt": "p", "steps": 2, "init_images": [big], "width": 256, "height": 256}
    assert client.post("/sdapi/v1/img2img", json=body).status_code == 200
    a1111_error(client.post("/sdapi/v1/txt2img", json={"prompt": "p", "junk": big}), 413)


def test_progress_idle_and_interrupt_without_work(client: httpx.Client, server: LiveServer) -> None:
    progress = client.get("/sdapi/v1/progress").json()
    assert progress["progress"] == 0 and progress["state"]["job_count"] == 0 and progress["eta_relative"] == 0
    assert client.post("/sdapi/v1/interrupt").json() == {}
