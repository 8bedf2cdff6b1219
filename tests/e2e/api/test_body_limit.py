"""SDXL_MAX_BODY_BYTES: too-large bodies are refused before parsing; abusive JSON under it is a 4xx, never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from app.config import Settings
from tests.conftest import LiveServer
from tests.helpers import assert_error

MIB = 1024 * 1024


def test_default_limit_is_one_mib() -> None:
    assert Settings(model="tiny").max_body_bytes == MIB


def test_declared_length_over_the_limit_is_413_at_once(client: httpx.Client) -> None:
    body = json.dumps({"prompt": "x" * (2 * MIB)}).encode()
    r = client.post("/refine", content=body, headers={"Content-Type": "application/json"})
    error = assert_error(r, 413, "payload_too_large")
    assert "SDXL_MAX_BODY_BYTES" in error["message"]


@pytest.mark.parametrize("route", ["/generate", "/img2img", "/inpaint"])
def test_routes_that_carry_images_have_the_upload_limit(client: httpx.Client, route: str) -> None:
    """16 MiB by default: room for a base64 input image (and a mask), and still a hard bound."""
    under = json.dumps({"prompt": "x" * (2 * MIB)}).encode()
    r = client.post(route, content=under, headers={"Content-Type": "application/json"})
    assert_error(r, 422, "invalid_request", "prompt")  # parsed and refused for the prompt, not the size
    over = json.dumps({"prompt": "x" * (17 * MIB)}).encode()
    r = client.post(route, content=over, headers={"Content-Type": "application/json"})
    error = assert_error(r, 413, "payload_too_large")
    assert "SDXL_MAX_UPLOAD_BYTES" in error["message"]


def test_chunked_body_is_cut_when_it_passes_the_limit(client: httpx.Client) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"prompt": "'
        for _ in range(64):  # 64 x 64 KiB = 4 MiB, no Content-Length
            sent += 65536
            yield b"x" * 65536
        yield b'"}'

    r = client.post("/refine", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
    assert_error(r, 413, "payload_too_large")


def test_a_body_under_the_limit_still_works(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "a lighthouse",'
        yield b' "seed": 1, "num_inference_steps": 2}'

    r = client.post("/generate", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text


ABUSIVE = {
    "nested arrays, 100 000 deep": b"[" * 100_000 + b"]" * 100_000,
    "nested objects, 50 000 deep": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "nested prompt": b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "500 KB prompt": json.dumps({"prompt": "x" * 500_000}).encode(),
    "huge float seed": b'{"prompt": "x", "seed": 1e999}',
    "huge float guidance": b'{"prompt": "x", "guidance_scale": 1e999}',
    "huge int seed": b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}",
    "NaN guidance": b'{"prompt": "x", "guidance_scale": NaN}',
    "-Infinity width": b'{"prompt": "x", "width": -Infinity}',
    "duplicate keys, last invalid": b'{"prompt": "x", "width": 512, "width": 1001}',
    "duplicate prompt, last empty": b'{"prompt": "x", "prompt": ""}',
    "lone surrogate": b'{"prompt": "\\ud800"}',
    "not utf-8": b'{"prompt": "\xff\xfe"}',
    "truncated": b'{"prompt": "x", "seed": ',
    "many keys": b"{" + b",".join(b'"k%d": 1' % i for i in range(50_000)) + b"}",
}


@pytest.mark.parametrize("body", list(ABUSIVE.values()), ids=list(ABUSIVE))
def test_abusive_json_is_a_client_error(server: LiveServer, client: httpx.Client, body: bytes) -> None:
    assert len(body) <= MIB
    r = client.post("/generate", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text[:300]
    assert r.json().keys() == {"error"}
    assert client.get("/health").status_code == 200


def test_a_body_of_many_small_values_is_refused_before_parsing(client: httpx.Client) -> None:
    """Under the size limit, yet millions of values: refused while it streams, not parsed into ~25x its size."""
    body = b'{"prompt": "x", "loras": [' + b"[]," * (4 * MIB // 3) + b"[]]}"
    r = client.post("/generate", content=body, headers={"Content-Type": "application/json"})
    error = assert_error(r, 413, "payload_too_large")
    assert "more than 20000 values" in error["message"] and "only fields that carry images" in error["message"]
    # The same count bounds a body sent without a Content-Type (which FastAPI parses as JSON too).
    r = client.post("/generate", content=body, headers={"Content-Type": ""})
    assert_error(r, 413, "payload_too_large")
    # The A1111 surface parses a body as JSON whatever its Content-Type says: counted whatever it says.
    for content_type in ("application/json", "text/plain", "application/octet-stream", ""):
        r = client.post("/sdapi/v1/png-info", content=body, headers={"Content-Type": content_type})
        assert r.status_code == 413 and "more than 20000 values" in r.json()["detail"], (content_type, r.text[:300])


def test_a_large_image_field_is_not_counted_as_values(client: httpx.Client) -> None:
    """Base64 holds none of the counted characters: a 12 MiB image field passes the count (and is then judged as
    an image, here not one)."""
    body = json.dumps({"prompt": "x", "image": "A" * (12 * MIB), "strength": 0.5}).encode()
    r = client.post("/img2img", content=body, headers={"Content-Type": "application/json"})
    assert_error(r, 422, "invalid_request", "image")


def test_prompts_full_of_commas_are_within_the_count(client: httpx.Client) -> None:
    prompt = "," * 2000
    body = {"prompt": prompt, "prompt_2": prompt, "negative_prompt": prompt, "negative_prompt_2": prompt}
    r = client.post("/generate", json={**body, "num_inference_steps": 1, "seed": 1})
    assert r.status_code == 200, r.text


def test_deep_nesting_is_named_as_such(client: httpx.Client) -> None:
    r = client.post("/generate", content=b"[" * 5000 + b"]" * 5000, headers={"Content-Type": "application/json"})
    error = assert_error(r, 422, "invalid_request", "body")
    assert "nests" in error["message"]
