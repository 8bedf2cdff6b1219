"""img2img and inpaint: inputs by id or base64, built with from_pipe (no new weights), and their limits."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import numpy as np
from PIL import Image

from app.engine.gpu.model_cache import pipeline_bytes
from app.engine.images.metadata import read_provenance
from tests.conftest import LiveServer
from tests.helpers import assert_error, decode, pixels


def _b64(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def _loaded_bytes(live: LiveServer) -> int:
    runner = live.service.runner
    pipes = [pipe for _, pipe in runner.cache.loaded()]
    views = [view for slot in runner.cache.slots.values() for view in slot.views.values()]
    return pipeline_bytes(*pipes, *views)


def _edit(client: httpx.Client, route: str, **fields: Any) -> httpx.Response:
    return client.post(route, json={"prompt": "a red barn", "seed": 5, "num_inference_steps": 4, **fields})


def test_img2img_by_id_and_by_base64_adds_no_weights(server: LiveServer, client: httpx.Client) -> None:
    source = client.post("/generate", json={"prompt": "a field", "seed": 1, "num_inference_steps": 2}).json()
    png = client.get(f"/download/{source['id']}").content
    before = _loaded_bytes(server)

    by_id = _edit(client, "/img2img", image_id=source["id"], strength=0.5)
    assert by_id.status_code == 200, by_id.text
    assert by_id.json()["parent_id"] == source["id"]
    assert _loaded_bytes(server) == before  # from_pipe shares every module: no new weights
    by_b64 = _edit(client, "/img2img", image=_b64(decode(png).convert("RGB")), strength=0.5)
    out_id = client.get(f"/download/{by_id.json()['id']}").content
    out_b64 = client.get(f"/download/{by_b64.json()['id']}").content
    assert np.abs(pixels(out_id) - pixels(out_b64)).mean() == 0  # the same input either way
    # Low strength stays near the input; full strength does not.
    assert (
        np.abs(pixels(out_id) - pixels(png)).mean()
        < np.abs(
            pixels(
                client.get(
                    f"/download/{_edit(client, '/img2img', image_id=source['id'], strength=1.0).json()['id']}"
                ).content
            )
            - pixels(png)
        ).mean()
    )
    record = read_provenance(out_id)
    assert (record["kind"], record["strength"], record["parent_id"]) == ("img2img", 0.5, source["id"])
    job = client.get(f"/jobs/{by_id.json()['job_id']}").json()
    assert job["kind"] == "img2img" and job["progress"] == {"step": 2, "total": 2}  # int(4 * 0.5)


def test_img2img_output_size_follows_the_input_or_the_request(client: httpx.Client) -> None:
    image = Image.new("RGB", (300, 270), (10, 200, 30))
    r = _edit(client, "/img2img", image=_b64(image, "JPEG"))
    assert r.status_code == 200, r.text
    assert (r.json()["width"], r.json()["height"]) == (296, 264)  # rounded down to multiples of 8
    r = _edit(client, "/img2img", image=_b64(image, "WEBP"), width=256, height=256)
    assert (r.json()["width"], r.json()["height"]) == (256, 256)
    small = Image.new("RGB", (128, 128))
    assert_error(_edit(client, "/img2img", image=_b64(small)), 422, "invalid_request", "width")


def test_inpaint_keeps_the_unmasked_part(server: LiveServer, client: httpx.Client) -> None:
    source = np.zeros((256, 256, 3), dtype=np.uint8)
    source[:, :, 2] = 255  # all blue
    mask = np.zeros((256, 256), dtype=np.uint8)
    mask[:, 128:] = 255  # repaint the right half
    before = _loaded_bytes(server)
    r = _edit(client, "/inpaint", image=_b64(Image.fromarray(source)), mask=_b64(Image.fromarray(mask)), strength=1.0)
    assert r.status_code == 200, r.text
    assert _loaded_bytes(server) == before
    out = pixels(client.get(f"/download/{r.json()['id']}").content)
    left, right = np.abs(out[:, :128] - source[:, :128]).mean(), np.abs(out[:, 128:] - source[:, 128:]).mean()
    # The kept half is the input (up to the invisible watermark), the masked half is repainted.
    assert left < 2 and right > 20, (left, right)
    assert read_provenance(client.get(f"/download/{r.json()['id']}").content)["kind"] == "inpaint"


def test_inpaint_needs_exactly_one_image_and_one_mask(client: httpx.Client) -> None:
    image = _b64(Image.new("RGB", (256, 256)))
    for fields in ({"image": image}, {"mask": image}, {"image": image, "mask": image, "mask_id": "0" * 32}):
        r = _edit(client, "/inpaint", **fields)
        assert r.status_code == 422, (fields, r.text)
    r = _edit(client, "/inpaint", image=image, mask_id="f" * 32)
    assert_error(r, 404, "not_found", "mask_id")
    r = _edit(client, "/img2img", image_id="../../etc/passwd")
    assert_error(r, 422, "invalid_request", "image_id")


def test_views_never_run_diffusers_own_watermarker(server: LiveServer) -> None:
    """We watermark the final image ourselves (or not, with SDXL_WATERMARK=false); from_pipe must not add one."""
    from app.engine.jobs.items import Control, GenerateParams, Setup

    runner = server.service.runner
    slot = runner.cache.slots["tiny"]
    image = Image.new("RGB", (256, 256))
    for fields in (
        {"kind": "img2img", "image": image, "strength": 0.5},
        {"kind": "inpaint", "image": image, "mask": image.convert("L"), "strength": 0.5},
        {"control": Control("tiny-controlnet", image, 1.0)},
    ):
        params = GenerateParams("p", None, None, None, 256, 256, 2, 5.0, 1, Setup("tiny"), **fields)
        assert runner._pipeline_for(slot, params).watermark is None, fields


def test_an_ended_job_keeps_its_parameters_not_its_decoded_images(server: LiveServer, client: httpx.Client) -> None:
    """Ended jobs stay readable for job_ttl_s, up to 10,000 of them: their input images (12 MiB each at 2048²) go."""
    source = client.post("/generate", json={"prompt": "a field", "seed": 1, "num_inference_steps": 2}).json()
    mask = _b64(Image.new("L", (256, 256), 255))
    done = [
        _edit(client, "/inpaint", image_id=source["id"], mask=mask).json(),
        client.post("/refine", json={"id": source["id"], "prompt": "y", "num_inference_steps": 4}).json(),
    ]
    for answer in done:
        assert "job_id" in answer, answer
        (item,) = server.service.jobs.get(answer["job_id"]).items
        assert item.image is None and getattr(item, "mask", None) is None, item
        assert item.seed == answer["seed"]  # what readers of an ended job use is still there
    assert server.service.jobs.get(done[1]["job_id"]).items[0].size == (256, 256)  # the refine source's size
