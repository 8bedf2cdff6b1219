"""Every bound of the contract answers 422 in the one error shape, naming the field; never a 500."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import start_server, tiny_settings
from tests.helpers import assert_error

OK: dict[str, Any] = {"prompt": "p", "num_inference_steps": 1}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", ""),
        ("prompt", "   \n"),
        ("prompt", "x" * 2001),
        ("prompt", None),
        ("prompt", 5),
        ("negative_prompt", "x" * 2001),
        ("prompt_2", ["a"]),
        ("negative_prompt_2", "x" * 2001),
        ("width", 248),
        ("width", 2056),
        ("width", 260),
        ("width", "wide"),
        ("width", 256.5),
        ("height", 0),
        ("height", -256),
        ("height", 4096),
        ("height", 1028),
        ("num_inference_steps", 0),
        ("num_inference_steps", 101),
        ("guidance_scale", -0.1),
        ("guidance_scale", 30.5),
        ("guidance_scale", "nan"),
        ("seed", -1),
        ("seed", 2**32),
        ("seed", 1.5),
        ("steps", 4),  # unknown field: a typo must not silently fall back to a default
    ],
)
def test_generate_bounds(client: httpx.Client, field: str, value: Any) -> None:
    body = {**OK, field: value}
    if value is None:
        body.pop(field)
    assert_error(client.post("/generate", json=body), 422, "invalid_request", field=field)


def test_messages_teach_the_allowed_range(client: httpx.Client) -> None:
    error = assert_error(client.post("/generate", json={**OK, "width": 4096}), 422, "invalid_request", "width")
    assert "2048" in error["message"] and "4096" in error["message"]
    error = assert_error(client.post("/generate", json={**OK, "num_inference_steps": 101}), 422, "invalid_request")
    assert "100" in error["message"]


@pytest.mark.parametrize(
    "raw",
    # b"}+\xff" is not UTF-8 (b"\xff\xfe" decodes as UTF-16): FastAPI's own answer to it would be a 400.
    [b"", b"{", b"[]", b'"prompt"', b"null", b'{"prompt": "a", "prompt": ', b"\xff\xfe", b"}+\xff"],
)
def test_malformed_json_is_422(client: httpx.Client, raw: bytes) -> None:
    r = client.post("/generate", content=raw, headers={"Content-Type": "application/json"})
    assert_error(r, 422, "invalid_request")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'"prompt"', "body: must be a JSON object, got 'prompt'"),
        (b"[1]", "body: must be a JSON object, got [1]"),
        (b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}", "body: a number in it has more than 4300 digits"),
        (b"}+\xff", "body: the request body is not valid UTF-8 JSON"),
    ],
)
def test_a_body_that_is_no_object_says_what_it_is(client: httpx.Client, raw: bytes, message: str) -> None:
    r = client.post("/generate", content=raw, headers={"Content-Type": "application/json"})
    assert assert_error(r, 422, "invalid_request", "body")["message"] == message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("strength", 0),
        ("strength", 1.01),
        ("num_inference_steps", 0),
        ("num_inference_steps", 101),
        ("guidance_scale", 31),
        ("aesthetic_score", -1),
        ("negative_aesthetic_score", 11),
        ("seed", -5),
        ("prompt", ""),
        ("id", "not-an-id"),
        ("id", None),
    ],
)
def test_refine_bounds(client: httpx.Client, field: str, value: Any) -> None:
    body: dict[str, Any] = {"id": "a" * 32, "prompt": "p", field: value}
    if value is None:
        body.pop(field)
    assert_error(client.post("/refine", json=body), 422, "invalid_request", field=field)


def test_unknown_route_and_method_use_the_error_shape(client: httpx.Client) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/generate"), 405, "method_not_allowed")


def test_configured_limits_are_enforced(model_cache: Path, tmp_path: Path) -> None:
    settings = tiny_settings(model_cache, tmp_path, max_side=512, max_pixels=384 * 384, max_steps=8)
    live = start_server(settings)
    try:
        with live.client() as c:
            e = assert_error(c.post("/generate", json={**OK, "width": 520}), 422, "invalid_request", "width")
            assert "512" in e["message"] and "520" in e["message"]
            assert_error(c.post("/generate", json={**OK, "height": 1024}), 422, "invalid_request", "height")
            e = assert_error(c.post("/generate", json={**OK, "width": 512, "height": 512}), 422, "invalid_request")
            assert str(384 * 384) in e["message"]
            assert_error(
                c.post("/generate", json={"prompt": "p", "num_inference_steps": 9}),
                422,
                "invalid_request",
                "num_inference_steps",
            )
            assert c.post("/generate", json={**OK, "width": 384, "height": 384}).status_code == 200
    finally:
        live.stop()


def test_405_names_every_method_of_the_path(client: httpx.Client) -> None:
    r = client.request("OPTIONS", "/jobs/" + "0" * 32)
    assert_error(r, 405, "method_not_allowed")
    assert set(r.headers["allow"].split(", ")) == {"GET", "DELETE"}


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"width": "256"}, "width"), ({"num_images": True}, "num_images"), ({"seed": 1.0}, "seed")],
)
def test_numbers_are_json_numbers_not_coerced(client: httpx.Client, fields: dict[str, Any], field: str) -> None:
    """Strict numbers on the native API (issue 13, item 12): a string, a boolean or a float is not an integer."""
    assert_error(client.post("/generate", json={"prompt": "x", **fields}), 422, "invalid_request", field)


def test_an_integer_is_still_a_float(client: httpx.Client) -> None:
    r = client.post("/generate", json={"prompt": "x", "guidance_scale": 5, "num_inference_steps": 2})
    assert r.status_code == 200, r.text


def test_one_request_cannot_ask_for_hours_of_work(client: httpx.Client) -> None:
    """2048², 100 steps, 8 images once held the only worker for hours (issue 13, item 9): 422 naming the rule."""
    big = {"prompt": "x", "width": 2048, "height": 2048, "num_inference_steps": 100, "num_images": 8}
    message = assert_error(client.post("/generate", json=big), 422, "invalid_request", "num_inference_steps")["message"]
    assert "at most 256 megapixel-steps" in message and "2048x2048 x 100 steps x 8 images = 3355" in message
    # Heun evaluates the UNet twice a step: 210 megapixel-steps with any other scheduler, 419 with it.
    heun = {"prompt": "x", "width": 1024, "height": 1024, "num_inference_steps": 100, "num_images": 2}
    r = client.post("/generate", json={**heun, "scheduler": "heun"})
    message = assert_error(r, 422, "invalid_request", "num_inference_steps")["message"]
    assert "1024x1024 x 100 steps x 2 (heun evaluates the model 2 times a step) x 2 images = 419" in message


@pytest.mark.parametrize(
    ("path", "body", "field", "message"),
    [
        ("/generate", {"width": 100}, "width", "a multiple of 8 between 256 and 2048, got 100"),
        ("/generate", {"height": 4096}, "height", "a multiple of 8 between 256 and 2048, got 4096"),
        ("/generate", {"width": "256"}, "width", "a multiple of 8 between 256 and 2048 (a JSON number), got '256'"),
        ("/generate", {"num_inference_steps": 0}, "num_inference_steps", "an integer between 1 and 100, got 0"),
        ("/generate", {"guidance_scale": 31}, "guidance_scale", "a number between 0 and 30, got 31"),
        ("/generate", {"seed": -1}, "seed", "an integer between 0 and 4294967295, got -1"),
        ("/generate", {"num_images": 9}, "num_images", "an integer between 1 and 8, got 9"),
        ("/generate", {"prompt": "x" * 2001}, "prompt", "a string of 1 to 2000 characters, got 2001 characters"),
        ("/generate", {"loras": [{"name": "a", "scale": 5}]}, "loras.0.scale", "a number between -4 and 4, got 5"),
        (
            "/generate",
            {"refine": {"mode": "ensemble", "high_noise_frac": 1}},
            "refine.high_noise_frac",
            "a number greater than 0 and less than 1, got 1",
        ),
        ("/refine", {"id": "a" * 32, "strength": 0}, "strength", "a number greater than 0 and at most 1, got 0"),
        ("/img2img", {"image_id": "a" * 32, "strength": 2}, "strength", "a number greater than 0 and at most 1, got 2"),
    ],
)
def test_a_bound_states_the_whole_rule_at_once(
    client: httpx.Client, path: str, body: dict[str, Any], field: str, message: str
) -> None:
    """Issue 15: not "multiple of 8" and then, once fixed, the minimum; the field's whole rule, as /docs shows it."""
    error = assert_error(client.post(path, json={"prompt": "p", **body}), 422, "invalid_request", field)
    assert error["message"] == f"{field}: {message}"
    assert error["details"] == [{"field": field, "message": message}]


@pytest.mark.parametrize(
    ("headers", "sent"),
    [({}, "no Content-Type header"), ({"Content-Type": "text/plain"}, "Content-Type: text/plain")],
)
def test_a_body_without_the_json_content_type_names_the_header(
    client: httpx.Client, headers: dict[str, str], sent: str
) -> None:
    r = client.post("/generate", content=b'{"prompt": "x"}', headers=headers)
    message = assert_error(r, 422, "invalid_request", "body")["message"]
    assert message == (
        f"body: must be a JSON object sent with the header Content-Type: application/json (the request had {sent})"
    )


def test_an_unavailable_model_says_what_a_caller_can_do(client: httpx.Client) -> None:
    """diffusers' advice ("pass local_files_only=False") is for the operator's log, not an API caller."""
    r = client.post("/generate", json={"prompt": "x", "model": "sdxl-turbo"})
    message = assert_error(r, 503, "model_load_failed")["message"]
    assert "local_files_only" not in message and "/" not in message  # no option, path or hub id to act on
    assert "SDXL_DOWNLOAD_MODELS=true" in message


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/images/generations", {"n": 9}, "n: num_images: an integer between 1 and 8, got 9"),
        ("/v1/images/generations", {"guidance": 31}, "guidance: guidance_scale: a number between 0 and 30, got 31.0"),
        ("/sdapi/v1/txt2img", {"cfg_scale": 31}, "cfg_scale: a number between 0 and 30, got 31.0"),
        ("/sdapi/v1/txt2img", {"steps": 101}, "steps: an integer between 1 and 100, got 101"),
    ],
)
def test_the_openai_and_a1111_surfaces_state_the_whole_rule_too(
    client: httpx.Client, path: str, body: dict[str, Any], message: str
) -> None:
    r = client.post(path, json={"prompt": "p", **body})
    assert r.status_code == 422, r.text
    said = r.json()["error"]["message"] if path.startswith("/v1/") else r.json()["detail"]
    assert said == message


@pytest.mark.parametrize(("field", "value"), [("n", True), ("n", "2"), ("n", 1.0), ("seed", "5"), ("steps", "2")])
def test_openai_generations_take_json_numbers_not_strings_or_booleans(
    client: httpx.Client, field: str, value: Any
) -> None:
    """As /generate and OpenAI's own API: "n": "2" was read as 2, and true as 1. (The edits' multipart form fields
    are text by nature, and stay converted.)"""
    r = client.post("/v1/images/generations", json={"prompt": "p", field: value})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert (error["param"], error["message"]) == (field, f"{field}: an integer (a JSON number), got {value!r}")


@pytest.mark.parametrize("value", ["0", "101", "abc"])
def test_a_query_parameter_states_its_whole_rule_too(client: httpx.Client, value: str) -> None:
    error = assert_error(client.get(f"/images?limit={value}"), 422, "invalid_request", "limit")
    assert error["message"] == f"limit: an integer between 1 and 100, got '{value}'"


@pytest.mark.parametrize("fields", [{}, {"image_id": "a" * 32, "image": "AAAA"}])
def test_exactly_one_input_names_the_field_without_echoing_the_body(
    client: httpx.Client, fields: dict[str, Any]
) -> None:
    error = assert_error(client.post("/img2img", json={"prompt": "p", **fields}), 422, "invalid_request", "image")
    assert error["message"] == "image: give exactly one of image (base64) or image_id (a stored image id)"
