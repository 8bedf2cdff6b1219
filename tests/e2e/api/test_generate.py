"""generate -> download round trips on a real uvicorn server running the tiny SDXL pipeline."""

from __future__ import annotations

import time

import httpx
import numpy as np
from PIL import PngImagePlugin

from app.engine.images.metadata import read_provenance
from tests.helpers import assert_error, decode, pixels


def test_generate_then_download_round_trip(client: httpx.Client) -> None:
    r = client.post("/generate", json={"prompt": "a red fox", "negative_prompt": "blurry", "seed": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seed"] == 7 and body["width"] == 256 and body["height"] == 256 and body["model"] == "tiny"
    assert set(body["timings"]) == {"queue_ms", "inference_ms", "encode_ms", "store_ms"}

    d = client.get(f"/download/{body['id']}")
    assert d.status_code == 200
    assert d.headers["content-type"] == "image/png"
    assert d.headers["content-disposition"] == f'attachment; filename="{body["id"]}.png"'
    assert "immutable" in d.headers["cache-control"] and "max-age=31536000" in d.headers["cache-control"]
    image = decode(d.content)
    assert image.format == "PNG" and image.size == (256, 256) and image.mode == "RGB"

    record = read_provenance(d.content)
    assert record["seed"] == 7 and record["prompt"] == "a red fox" and record["negative_prompt"] == "blurry"
    assert (
        record["steps"] == 4 and record["guidance_scale"] == 5.0 and (record["width"], record["height"]) == (256, 256)
    )
    assert record["model"] == "tiny" and record["kind"] == "generate" and record["parent_id"] is None
    assert record["scheduler"] == "EulerDiscreteScheduler"
    assert {"diffusers", "torch", "transformers", "sdxl-serve"} <= set(record["versions"])
    assert isinstance(image, PngImagePlugin.PngImageFile)  # Image.open is typed as any image; its text chunks
    parameters = image.text["parameters"]
    assert parameters.startswith("a red fox\nNegative prompt: blurry\nSteps: 4, Sampler: Euler, CFG scale: 5")
    assert "Seed: 7" in parameters and "Size: 256x256" in parameters


def test_non_square_size_and_explicit_params(client: httpx.Client) -> None:
    r = client.post(
        "/generate",
        json={
            "prompt": "p",
            "prompt_2": "q",
            "negative_prompt_2": "n",
            "width": 384,
            "height": 256,
            "num_inference_steps": 2,
            "guidance_scale": 0,
            "seed": 1,
        },
    )
    assert r.status_code == 200, r.text
    png = client.get(f"/download/{r.json()['id']}").content
    assert decode(png).size == (384, 256)
    record = read_provenance(png)
    assert (record["steps"], record["guidance_scale"], record["prompt_2"]) == (2, 0.0, "q")


def test_same_seed_gives_identical_bytes_and_other_seed_differs(client: httpx.Client) -> None:
    def png(seed: int) -> bytes:
        r = client.post("/generate", json={"prompt": "lighthouse", "seed": seed})
        assert r.status_code == 200
        return client.get(f"/download/{r.json()['id']}").content

    first, again, other = png(123), png(123), png(124)
    assert first == again
    assert np.abs(pixels(first) - pixels(other)).mean() > 5


def test_random_seed_is_returned_and_reproduces(client: httpx.Client) -> None:
    a = client.post("/generate", json={"prompt": "x"}).json()
    b = client.post("/generate", json={"prompt": "x"}).json()
    assert a["seed"] != b["seed"]  # 1 in 2^32 to collide
    again = client.post("/generate", json={"prompt": "x", "seed": a["seed"]}).json()
    assert client.get(f"/download/{a['id']}").content == client.get(f"/download/{again['id']}").content


def test_accept_png_returns_the_image_itself(client: httpx.Client) -> None:
    r = client.post("/generate", json={"prompt": "owl", "seed": 5}, headers={"Accept": "image/png"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png" and r.headers["x-seed"] == "5"
    assert decode(r.content).size == (256, 256)
    stored = client.get(f"/download/{r.headers['x-image-id']}")
    assert stored.content == r.content
    # JSON wins when the client prefers it.
    j = client.post("/generate", json={"prompt": "owl"}, headers={"Accept": "application/json, image/png;q=0.5"})
    assert j.headers["content-type"] == "application/json" and "id" in j.json()


def test_unknown_id_is_404_and_etag_gives_304(client: httpx.Client) -> None:
    assert_error(client.get("/download/" + "0" * 32), 404, "not_found")
    image_id = client.post("/generate", json={"prompt": "x", "seed": 1}).json()["id"]
    first = client.get(f"/download/{image_id}")
    again = client.get(f"/download/{image_id}", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    etag = first.headers["etag"]
    for header in (f"W/{etag}", f'"{"0" * 32}", {etag}', "*"):  # RFC 9110: weak, a list, any
        assert client.get(f"/download/{image_id}", headers={"If-None-Match": header}).status_code == 304, header
    assert client.get(f"/download/{image_id}", headers={"If-None-Match": f'"{"0" * 32}"'}).status_code == 200
    head = client.head(f"/download/{image_id}")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(first.content))


def test_each_request_is_logged_with_timings(client: httpx.Client, caplog: object) -> None:
    import logging

    assert isinstance(caplog, __import__("pytest").LogCaptureFixture)
    with caplog.at_level(logging.INFO, logger="app.requests"):
        r = client.post("/generate", json={"prompt": "x", "seed": 2}, headers={"X-Request-ID": "trace-42"})
        # The line is written once the response has gone out, so it may land a moment after we read it.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            lines = [rec.getMessage() for rec in caplog.records if rec.name == "app.requests"]
            if any(m.startswith("trace-42 ") for m in lines):
                break
            time.sleep(0.02)
    assert r.headers["x-request-id"] == "trace-42"
    line = next(m for m in lines if m.startswith("trace-42 "))
    assert "POST /generate 200" in line
    for key in ("queue_ms=", "inference_ms=", "encode_ms=", "store_ms="):
        assert key in line
