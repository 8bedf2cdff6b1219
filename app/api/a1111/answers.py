"""What A1111 clients read back from txt2img/img2img: `images` (raw base64 PNGs), `parameters` (the request as read)
and `info`, a JSON *string* (LibreChat and webuiapi `JSON.parse` it) whose `infotexts[i]` is image i's own
`parameters` PNG chunk, read back from the stored PNG, so the two cannot differ.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

from app.a1111_schemas import A1111Img2Img, A1111Txt2Img
from app.api.a1111 import samplers
from app.api.a1111.checkpoints import model_hash
from app.engine import Engine, Job


def _info(body: A1111Txt2Img, service: Engine, job: Job, infotexts: list[str], source: str) -> dict[str, Any]:
    first = job.items[0]  # every image of a job shares these; only the seed differs
    seeds = [image.seed for image in job.images]
    count = len(job.images)
    return {
        "prompt": body.prompt or "",
        "all_prompts": [body.prompt or ""] * count,
        "negative_prompt": body.negative_prompt or "",
        "all_negative_prompts": [body.negative_prompt or ""] * count,
        "seed": seeds[0],
        "all_seeds": seeds,
        "subseed": seeds[0],
        "all_subseeds": seeds,
        "subseed_strength": 0,
        "width": job.images[0].width,
        "height": job.images[0].height,
        "sampler_name": samplers.label(first.setup.scheduler),
        "scheduler": "Karras" if first.setup.scheduler == "dpmpp_2m_karras" else "Automatic",
        "cfg_scale": first.guidance,
        "steps": first.steps,
        "batch_size": count,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": job.model,
        "sd_model_hash": model_hash(job.model, source)[:10],
        "sd_vae_name": first.setup.vae,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": first.strength,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": job.kind == "inpaint",
        "version": "sdxl-serve",
    }


async def images_answer(body: A1111Txt2Img, service: Engine, job: Job) -> dict[str, Any]:
    pngs = await asyncio.gather(*(service.png(image.id) for image in job.images))
    texts = await asyncio.gather(*(service.image_text(png) for png in pngs))
    sources = {m["name"]: m["source"] for m in service.models_info()["models"]}
    parameters = body.model_dump()
    if isinstance(body, A1111Img2Img) and not body.include_init_images:
        parameters.update(init_images=None, mask=None)  # as A1111: the inputs are not sent back
    return {
        "images": [] if body.send_images is False else [base64.b64encode(png).decode() for png in pngs],
        "parameters": parameters,
        "info": json.dumps(_info(body, service, job, [t.get("parameters", "") for t in texts], sources[job.model])),
    }
