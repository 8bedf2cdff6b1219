"""The A1111 API driven by `webuiapi`, the Python client scripts and bots use, against a real server with a key
(sent as webuiapi sends A1111's --api-auth: HTTP Basic, the key as the password)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import webuiapi
from PIL import Image

from app.engine.images.metadata import read_provenance
from tests.conftest import LiveServer, start_server, tiny_settings

KEY = "a1111-key"


@pytest.fixture(scope="module")
def secured(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tiny_settings(model_cache, tmp_path_factory.mktemp("img"), generation_auth_key=KEY))
    yield live
    live.stop()


@pytest.fixture
def api(secured: LiveServer) -> webuiapi.WebUIApi:
    return webuiapi.WebUIApi(baseurl=f"{secured.url}/sdapi/v1", username="anyone", password=KEY, steps=2)


def _png_bytes(image: Image.Image) -> bytes:
    png: bytes = webuiapi.webuiapi.base64.b64decode(webuiapi.raw_b64_img(image))  # the PNG as webuiapi re-encodes it
    return png


def test_txt2img(api: webuiapi.WebUIApi) -> None:
    result = api.txt2img(
        prompt="a cat <lora:tiny-lora:0.5>",
        negative_prompt="dog",
        sampler_name="DPM++ 2M Karras",
        width=256,
        height=256,
        batch_size=2,
        seed=5,
        cfg_scale=5,
    )
    assert len(result.images) == 2 and all(image.size == (256, 256) for image in result.images)
    info = result.info  # webuiapi json.loads it: a JSON string
    assert info["all_seeds"] == [5, 6] and info["seed"] == 5
    assert (info["sampler_name"], info["steps"], info["cfg_scale"], info["sd_model_name"]) == (
        "DPM++ 2M Karras",
        2,
        5.0,
        "tiny",
    )
    assert info["prompt"] == "a cat <lora:tiny-lora:0.5>" and info["negative_prompt"] == "dog"
    for image, text in zip(result.images, info["infotexts"], strict=True):
        assert image.info["parameters"] == text  # every PNG carries its own infotext
    assert "Negative prompt: dog" in info["infotexts"][0] and "<lora:tiny-lora:0.5>" in info["infotexts"][0]
    record = read_provenance(_png_bytes(result.images[1]))
    assert (record["seed"], record["scheduler"], record["loras"]) == (
        6,
        "dpmpp_2m_karras",
        [{"name": "tiny-lora", "scale": 0.5}],
    )
    assert result.parameters["prompt"] == "a cat <lora:tiny-lora:0.5>"


def test_img2img_and_inpainting(api: webuiapi.WebUIApi) -> None:
    source = api.txt2img(prompt="a house", width=256, height=256, seed=1).image
    redrawn = api.img2img(images=[source], prompt="a barn", width=256, height=256, denoising_strength=0.5, seed=2)
    assert redrawn.image.size == (256, 256)
    record = read_provenance(_png_bytes(redrawn.image))
    assert (record["kind"], record["strength"], record["prompt"]) == ("img2img", 0.5, "a barn")
    assert redrawn.info["denoising_strength"] == 0.5
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (64, 64, 192, 192))
    inpainted = api.img2img(images=[source], mask_image=mask, prompt="a door", width=256, height=256, seed=3)
    assert read_provenance(_png_bytes(inpainted.image))["kind"] == "inpaint"


def test_options_and_models(api: webuiapi.WebUIApi) -> None:
    models = api.get_sd_models()
    assert {"title", "model_name", "hash", "sha256", "filename", "config"} <= set(models[0])
    assert api.util_get_current_model() == models[0]["title"] and models[0]["model_name"] == "tiny"
    other = next(m["title"] for m in models if m["model_name"] == "tiny-b")
    api.util_set_model(other, find_closest=False)  # POST /options {"sd_model_checkpoint": title}
    try:
        assert api.get_options()["sd_model_checkpoint"] == other
        api.util_wait_for_ready(check_interval=0.1)  # polls /progress until progress 0 and job_count 0
        assert api.txt2img(prompt="p", width=256, height=256).info["sd_model_name"] == "tiny-b"
    finally:
        api.set_options({"sd_model_checkpoint": models[0]["title"]})
    assert api.util_get_current_model() == models[0]["title"]


def test_lists(api: webuiapi.WebUIApi) -> None:
    assert {"Euler a", "Euler", "DPM++ 2M", "DDIM", "UniPC", "Heun"} <= set(api.util_get_sampler_names())
    assert set(api.util_get_scheduler_names()) == {"automatic", "karras"}
    assert api.get_upscalers()[0]["name"] == "None"
    assert api.get_latent_upscale_modes() == []
    assert "tiny-lora" in [lora["name"] for lora in api.get_loras()]
    assert "tiny-vae-b" in [vae["model_name"] for vae in api.get_sd_vae()]
    assert api.get_cmd_flags()["api"] is True
    assert api.get_scripts() == {"txt2img": [], "img2img": []}
    assert api.get_embeddings() == {"loaded": {}, "skipped": {}}
    assert api.get_face_restorers() == api.get_prompt_styles() == api.get_hypernetworks() == []


def test_png_info(api: webuiapi.WebUIApi) -> None:
    image = api.txt2img(prompt="a boat", negative_prompt="rain", width=256, height=256, seed=9).image
    info = api.png_info(image)  # sent as a data: URL
    assert info.info == image.info["parameters"]
    parsed = info.parameters
    assert (parsed["Prompt"], parsed["Negative prompt"], parsed["Seed"], parsed["Steps"]) == (
        "a boat",
        "rain",
        "9",
        "2",
    )


def test_progress_while_running_then_interrupt(api: webuiapi.WebUIApi) -> None:
    outcome: dict[str, Any] = {}

    def slow() -> None:
        try:
            outcome["result"] = api.txt2img(prompt="slow", width=512, height=512, steps=60)
        except RuntimeError as exc:  # webuiapi raises RuntimeError(status, text) on a non-200 answer
            outcome["error"] = exc.args

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.monotonic() + 60
    progress = api.get_progress()
    while progress["progress"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
        progress = api.get_progress()
    assert 0 < progress["progress"] < 1 and progress["state"]["job_count"] == 1
    assert 0 < progress["state"]["sampling_step"] < progress["state"]["sampling_steps"] == 60
    assert progress["eta_relative"] > 0
    api.interrupt()
    thread.join(60)
    status, text = outcome["error"]
    assert status == 409 and json.loads(text)["error"] == "cancelled" and json.loads(text)["detail"]
    idle = api.get_progress()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0


def test_wrong_key_is_refused_with_a_basic_challenge(secured: LiveServer) -> None:
    wrong = webuiapi.WebUIApi(baseurl=f"{secured.url}/sdapi/v1", username="anyone", password="wrong")
    with pytest.raises(RuntimeError) as refused:
        wrong.txt2img(prompt="p")
    assert refused.value.args[0] == 401 and json.loads(refused.value.args[1])["detail"]
    empty = base64.b64encode(b":").decode()
    for headers in ({}, {"Authorization": "Basic"}, {"Authorization": "Basic !!"}, {"Authorization": f"Basic {empty}"}):
        response = httpx.get(f"{secured.url}/sdapi/v1/options", headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Basic ")
    # The usual headers carry the key here too.
    assert httpx.get(f"{secured.url}/sdapi/v1/options", headers={"X-API-Key": KEY}).status_code == 200
    assert httpx.get(f"{secured.url}/sdapi/v1/options", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
