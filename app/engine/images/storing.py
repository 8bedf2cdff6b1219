"""A finished image becomes a stored PNG: provenance, watermark and encoding off the event loop, then the store.

Runs on the event loop (the encoding in a worker thread), after the GPU owner has handed the image over.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from PIL import Image

from app.config import Settings
from app.engine.gpu.runner import Runner
from app.engine.images import output
from app.engine.images.metadata import Provenance
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
    store: ImageStore, settings: Settings, runner: Runner, job: Job, index: int, image: Image.Image
) -> Stored:
    """Raises what the store raises (StorageFull, StorageUnavailable, ...); nothing partial is left then."""
    started = time.perf_counter()
    png = await asyncio.to_thread(output.encode, image, _provenance(settings, runner, job, index))
    encoded = time.perf_counter()
    record = ImageRecord(id=new_id(), seed=job.items[index].seed, width=image.width, height=image.height)
    await store.put(record.id, png, _object_metadata(job, record))
    return Stored(record, png, encoded - started, time.perf_counter() - encoded)


def _provenance(settings: Settings, runner: Runner, job: Job, index: int) -> Provenance:
    item = job.items[index]
    if job.kind == "refine":
        return output.refine_provenance(
            item,
            model=job.model,
            scheduler=type(runner.refiner.scheduler).__name__,
            watermark=settings.watermark,
            parent_id=job.parent_id,
        )
    # A named scheduler by its name; otherwise the class of the model's own (recorded when it was loaded).
    scheduler = item.setup.scheduler or runner.scheduler_names.get(item.setup.model, "default")
    return output.generate_provenance(item, scheduler=scheduler, watermark=settings.watermark)


def image_event(job: Job, record: ImageRecord) -> dict[str, Any]:
    return {
        "image_id": record.id,
        "url": f"/download/{record.id}",
        "job_id": job.id,
        "kind": job.kind,
        "model": job.model,
        "seed": record.seed,
        "width": record.width,
        "height": record.height,
        "parent_id": job.parent_id,
    }


def _object_metadata(job: Job, record: ImageRecord) -> dict[str, str]:
    """Travels with the object in backends that keep metadata beside the bytes (S3 user metadata)."""
    meta = {"kind": job.kind, "model": job.model, "seed": str(record.seed), "job-id": job.id}
    if job.parent_id:
        meta["parent-id"] = job.parent_id
    return meta
