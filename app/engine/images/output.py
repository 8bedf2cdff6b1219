"""A finished image becomes a stored PNG: provenance, then the watermark and the PNG encoding (in a worker
process, encoder.py), then the store. Runs after the GPU owner has handed the image over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from PIL import Image

from app.config import Settings
from app.engine.images.encoder import Encoder
from app.engine.images.metadata import Provenance
from app.engine.jobs.items import GenerateParams, RefineParams
from app.engine.jobs.job import ImageRecord, Job
from app.storage.base import ImageStore
from app.storage.ids import new_id


@dataclass(frozen=True)
class Stored:
    record: ImageRecord
    png: bytes
    encode_s: float
    store_s: float


async def encode_and_store(
    store: ImageStore, encoder: Encoder, settings: Settings, job: Job, index: int, image: Image.Image, scheduler: str
) -> Stored:
    """Raises what the store raises (StorageFull, StorageUnavailable, ...); nothing partial is left then."""
    started = time.perf_counter()
    png = await encoder.encode(image, _provenance(settings, job, index, scheduler))
    encoded = time.perf_counter()
    record = ImageRecord(id=new_id(), seed=job.items[index].seed, width=image.width, height=image.height)
    await store.put(record.id, png, _object_metadata(job, record))
    return Stored(record, png, encoded - started, time.perf_counter() - encoded)


def _provenance(settings: Settings, job: Job, index: int, scheduler: str) -> Provenance:
    item = job.items[index]
    if isinstance(item, RefineParams):
        return refine_provenance(
            item, model=job.model, scheduler=scheduler, watermark=settings.watermark, parent_id=job.parent_id
        )
    return generate_provenance(item, scheduler=scheduler, watermark=settings.watermark)


def _object_metadata(job: Job, record: ImageRecord) -> dict[str, str]:
    """Travels with the object in backends that keep metadata beside the bytes (S3 user metadata)."""
    meta = {"kind": job.kind, "model": job.model, "seed": str(record.seed), "job-id": job.id}
    if job.parent_id:
        meta["parent-id"] = job.parent_id
    return meta


def generate_provenance(p: GenerateParams, *, scheduler: str, watermark: bool) -> Provenance:
    return Provenance(
        kind=p.kind,
        model=p.setup.model,
        prompt=p.prompt,
        negative_prompt=p.negative_prompt,
        prompt_2=p.prompt_2,
        negative_prompt_2=p.negative_prompt_2,
        seed=p.seed,
        steps=p.steps,
        guidance_scale=p.guidance,
        width=p.width,
        height=p.height,
        scheduler=scheduler,
        watermark=watermark,
        strength=p.strength,
        parent_id=p.parent_id,
        loras=[{"name": name, "scale": scale} for name, scale in p.setup.loras],
        vae=p.setup.vae,
        controlnet=None if p.control is None else {"name": p.control.name, "conditioning_scale": p.control.scale},
        refine=None if p.high_noise_frac is None else {"mode": "ensemble", "high_noise_frac": p.high_noise_frac},
    )


def refine_provenance(
    p: RefineParams, *, model: str, scheduler: str, watermark: bool, parent_id: str | None
) -> Provenance:
    return Provenance(
        kind="refine",
        model=model,
        prompt=p.prompt,
        negative_prompt=p.negative_prompt,
        prompt_2=None,
        negative_prompt_2=None,
        seed=p.seed,
        steps=p.steps,
        guidance_scale=p.guidance,
        width=p.size[0],
        height=p.size[1],
        scheduler=scheduler,
        watermark=watermark,
        strength=p.strength,
        parent_id=parent_id,
    )
