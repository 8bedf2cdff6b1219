"""The OpenAI-compatible API, driven by the official `openai` client against a real server."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import openai
import pytest
from PIL import Image, ImageDraw

from app.engine.images.metadata import read_provenance
from tests.conftest import LiveServer, start_server, tiny_settings
from tests.helpers import assert_error, decode

KEY = "k"


@pytest.fixture(scope="module")
def secured(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tiny_settings(model_cache, tmp_path_factory.mktemp("img"), generation_auth_key=KEY))
    yield live
    live.stop()


@pytest.fixture
def oai(secured: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{secured.url}/v1", api_key=KEY, max_retries=0, timeout=60) as client:
        yield client


def _b64_pngs(response: Any) -> list[bytes]:
    assert response.data and all(d.url is None for d in response.data)
    return [base64.b64decode(d.b64_json) for d in response.data]


def test_generate_b64_json(oai: openai.OpenAI) -> None:
    response = oai.images.generate(model="tiny", prompt="a red square", n=2, size="256x256", response_format="b64_json")
    assert isinstance(response.created, int) and response.created > 0
    pngs = _b64_pngs(response)
    assert len(pngs) == 2 and pngs[0] != pngs[1]
    assert all(decode(png).size == (256, 256) for png in pngs)


def test_generate_url_downloads_the_stored_png(oai: openai.OpenAI, secured: LiveServer) -> None:
    response = oai.images.generate(prompt="a blue circle", response_format="url", extra_body={"seed": 3})
    assert response.data and len(response.data) == 1
    path = response.data[0].url
    assert path is not None and path.startswith("/download/")  # relative: no SDXL_PUBLIC_URL, and never the Host
    assert path.endswith(".png")  # clients take the file's type from the URL
    url = secured.url + path
    image_id = url.rsplit("/", 1)[1].removesuffix(".png")
    with secured.client(headers={"Authorization": f"Bearer {KEY}"}) as c:
        from_url = httpx.get(url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        assert from_url.status_code == 200 and from_url.headers["content-type"] == "image/png"
        assert from_url.content == c.get(f"/download/{image_id}").content
    assert read_provenance(from_url.content)["seed"] == 3


def test_extensions_are_honoured(oai: openai.OpenAI) -> None:
    response = oai.images.generate(
        prompt="a green hill",
        size="256x256",
        response_format="b64_json",
        quality="standard",
        style="vivid",
        user="tester",
        extra_body={"seed": 5, "negative_prompt": "x", "steps": 2, "guidance": 3.5},
    )
    record = read_provenance(_b64_pngs(response)[0])
    assert (record["seed"], record["steps"], record["negative_prompt"]) == (5, 2, "x")
    assert record["guidance_scale"] == 3.5


def test_models_list(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert ids[0] == "tiny" and {"tiny-b", "sdxl-base", "sdxl-turbo"} <= set(ids)  # the default first


def test_wrong_key_is_an_authentication_error(secured: LiveServer) -> None:
    client = openai.OpenAI(base_url=f"{secured.url}/v1", api_key="wrong", max_retries=0)
    with client, pytest.raises(openai.AuthenticationError) as caught:
        client.images.generate(prompt="x")
    error = caught.value.response.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"size": "300x300"}, "size"),
        ({"size": "abc"}, "size"),
        ({"size": "4096x256"}, "size"),
        ({"n": 9}, "n"),
        ({"n": 0}, "n"),
        ({"model": "no-such-model"}, "model"),
        ({"extra_body": {"steps": 0}}, "steps"),
        ({"extra_body": {"guidance": 31}}, "guidance"),
        ({"extra_body": {"seed": -1}}, "seed"),
        ({"extra_body": {"num_images": 2}}, "num_images"),  # our own names are unknown fields here
        ({"response_format": "png"}, "response_format"),
    ],
)
def test_bad_requests_name_the_field(oai: openai.OpenAI, kwargs: dict[str, Any], param: str) -> None:
    # We answer 422 as everywhere else, which the client raises as UnprocessableEntityError (OpenAI's own 400
    # would be BadRequestError); both are APIStatusError.
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        oai.images.generate(prompt="x", **kwargs)
    assert caught.value.status_code == 422
    body = caught.value.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == param, body
    assert param in body["error"]["message"]


def test_missing_prompt_and_unknown_route_use_the_openai_shape(secured: LiveServer) -> None:
    with secured.client(headers={"Authorization": f"Bearer {KEY}"}) as c:
        missing = c.post("/v1/images/generations", json={"n": 1}).json()["error"]
        assert (missing["param"], missing["code"]) == ("prompt", "invalid_request")
        unknown = c.get("/v1/nope")
        assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "invalid_request_error"
        # Outside /v1/ nothing changed.
        assert_error(c.post("/generate", json={"prompt": "x", "n": 2}), 422, "invalid_request", "n")
        assert_error(httpx.get(f"{secured.url}/generate", timeout=10), 401, "unauthorized")


def test_model_picks_a_registry_model(oai: openai.OpenAI) -> None:
    def one(model: str) -> dict[str, Any]:
        response = oai.images.generate(
            model=model, prompt="a hill", size="256x256", response_format="b64_json", extra_body={"seed": 4, "steps": 2}
        )
        return read_provenance(_b64_pngs(response)[0])

    assert one("tiny-b")["model"] == "tiny-b" and one("tiny")["model"] == "tiny"
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        oai.images.generate(model="no-such-model", prompt="a hill")
    error = caught.value.response.json()["error"]
    assert error["param"] == "model" and "tiny-b" in error["message"]


def test_urls_use_the_public_url_and_never_the_host_header(
    model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = tiny_settings(
        model_cache, tmp_path_factory.mktemp("img"), generation_auth_key=KEY, public_url="https://sdxl.example.com/"
    )
    live = start_server(settings)
    try:
        with httpx.Client(base_url=live.url, timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as c:
            body = {"prompt": "x", "response_format": "url", "size": "256x256"}
            r = c.post("/v1/images/generations", json=body, headers={"Host": "evil.example"})
        assert r.status_code == 200, r.text
        url = r.json()["data"][0]["url"]
        assert url.startswith("https://sdxl.example.com/download/") and "evil" not in url and url.endswith(".png")
    finally:
        live.stop()


def test_openai_model_names_mean_the_default_model(oai: openai.OpenAI) -> None:
    """Clients hard-code OpenAI's names; gpt-image models answer b64_json by default, the others a URL."""
    gpt = oai.images.generate(model="gpt-image-1", prompt="a hill", extra_body={"steps": 1})
    assert read_provenance(_b64_pngs(gpt)[0])["model"] == "tiny"
    dalle = oai.images.generate(model="dall-e-3", prompt="a hill", extra_body={"steps": 1})
    assert dalle.data is not None
    assert dalle.data[0].b64_json is None and (dalle.data[0].url or "").endswith(".png")


def test_size_presets_become_the_models_shape(oai: openai.OpenAI) -> None:
    response = oai.images.generate(
        prompt="a hill", size="1536x1024", response_format="b64_json", extra_body={"steps": 1}
    )
    assert decode(_b64_pngs(response)[0]).size == (376, 256)  # SDXL's 1216x832 bucket at the tiny model's 256²
    assert response.size == "376x256"
    auto = oai.images.generate(prompt="a hill", size="auto", response_format="b64_json", extra_body={"steps": 1})
    assert decode(_b64_pngs(auto)[0]).size == (256, 256)


def test_quality_sets_the_steps(oai: openai.OpenAI) -> None:
    def steps(quality: Literal["low", "medium", "high"]) -> int:
        response = oai.images.generate(prompt="x", quality=quality, response_format="b64_json")
        return int(read_provenance(_b64_pngs(response)[0])["steps"])

    assert (steps("low"), steps("medium"), steps("high")) == (2, 3, 6)  # the tiny model's 4 steps: 1/2, 3/4, 1.5x


@pytest.mark.parametrize(
    ("output_format", "magic"), [("jpeg", b"\xff\xd8\xff"), ("webp", b"RIFF"), ("png", b"\x89PNG")]
)
def test_output_formats(oai: openai.OpenAI, output_format: Literal["jpeg", "webp", "png"], magic: bytes) -> None:
    response = oai.images.generate(
        prompt="x",
        model="gpt-image-1",
        output_format=output_format,
        output_compression=50,
        background="opaque",
        moderation="low",
        extra_body={"steps": 1},
    )
    assert response.data is not None
    data = base64.b64decode(response.data[0].b64_json or "")
    assert data.startswith(magic) and response.output_format == output_format
    assert decode(data).size == (256, 256)


def _png(size: tuple[int, int], alpha_box: tuple[int, int, int, int] | None = None) -> bytes:
    image = Image.new("RGBA", size, (200, 40, 40, 255))
    if alpha_box is not None:
        ImageDraw.Draw(image).rectangle(alpha_box, fill=(0, 0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_edit_without_a_mask_is_img2img(oai: openai.OpenAI) -> None:
    response = oai.images.edit(
        image=("in.png", _png((320, 256)), "image/png"), prompt="make it blue", response_format="b64_json"
    )
    png = _b64_pngs(response)[0]
    assert decode(png).size == (320, 256)  # the input's size
    assert read_provenance(png)["kind"] == "img2img"


def test_edit_with_a_mask_inpaints_the_transparent_area(oai: openai.OpenAI) -> None:
    source = _png((256, 256))
    mask = _png((256, 256), alpha_box=(64, 64, 191, 191))  # transparent: redraw here
    response = oai.images.edit(
        image=[("in.png", source, "image/png")],  # a list: sent as image[]
        mask=("mask.png", mask, "image/png"),
        prompt="a window",
        model="gpt-image-1",
        extra_body={"seed": 2},
    )
    out = np.asarray(decode(_b64_pngs(response)[0]).convert("RGB"), dtype=np.int16)
    original = np.asarray(Image.open(io.BytesIO(source)).convert("RGB"), dtype=np.int16)
    inside = np.abs(out[80:176, 80:176] - original[80:176, 80:176]).mean()
    outside = np.abs(out[:40] - original[:40]).mean()
    assert inside > 4 * max(outside, 1.0), (inside, outside)  # the masked square was redrawn, the rest kept


def test_edit_errors_name_the_field(secured: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    with secured.client(headers=headers) as c:
        two = [("image[]", ("a.png", _png((256, 256)), "image/png"))] * 2
        r = c.post("/v1/images/edits", data={"prompt": "x"}, files=two)
        assert r.status_code == 422 and r.json()["error"]["param"] == "image", r.text
        r = c.post("/v1/images/edits", data={"prompt": "x"})
        assert r.status_code == 422 and r.json()["error"]["param"] == "image", r.text
        opaque = {"image": ("a.png", _png((256, 256)), "image/png"), "mask": ("m.png", _png((256, 256)), "image/png")}
        r = c.post("/v1/images/edits", data={"prompt": "x"}, files=opaque)
        assert r.status_code == 422 and r.json()["error"]["param"] == "mask", r.text
        assert "transparent" in r.json()["error"]["message"]
        r = c.post("/v1/images/edits", data={"prompt": "x", "n": "9"}, files={"image": ("a.png", _png((256, 256)))})
        assert r.status_code == 422 and r.json()["error"]["param"] == "n", r.text
        r = c.post("/v1/images/edits", data={"prompt": "x"}, files={"image": ("a.gif", b"GIF89a....")})
        assert r.status_code == 422 and r.json()["error"]["param"] == "image", r.text
        r = c.post("/v1/images/edits", data={"prompt": "x", "bogus": "1"}, files={"image": ("a.png", _png((256, 256)))})
        assert r.status_code == 422 and r.json()["error"]["param"] == "bogus", r.text
        # A malformed form (what the schema fuzz sent) is a 422 naming the body, not Starlette's bare 400.
        boundary = "bd8531f83a822e4dcf006dd2ae282ee2"
        broken = f"--{boundary}\r\n948--{boundary}--\r\n".encode()
        r = c.post(
            "/v1/images/edits", content=broken, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        assert r.status_code == 422 and r.json()["error"]["param"] == "body", r.text
        assert "multipart form could not be read" in r.json()["error"]["message"]
