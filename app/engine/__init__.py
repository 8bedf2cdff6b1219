"""The engine: accepted requests become jobs, jobs become stored PNGs. It knows nothing of HTTP.

The API imports three names from here: `Engine`, the protocol its routes are typed against, `Job`, what a
submit returns, and `ImageService`, the implementation `create_app` builds. The rooms below answer one question each:
  service.py, completion.py  the facade (lifecycle, submit, wait/cancel, find/watch) and a batch's end
  jobs/     what was accepted: job, items, request → items under the limits, cross-replica records
  gpu/      what runs on the GPU owner's thread: scheduler, batching policy, runner, pipelines, cache, loader
  models/   which models exist: registry, samplers, the /models view, the tiny offline models
  images/   images in (upload decoding) and out (provenance, watermark, PNG, store)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.engine.jobs.job import Job
from app.engine.protocol import Engine

if TYPE_CHECKING:
    from app.engine.service import ImageService

__all__ = ["Engine", "ImageService", "Job"]


def __getattr__(name: str) -> Any:
    # Imported on first use, not with the package: `app.engine.models.tiny` alone (the tests' fixture, the
    # CLI) must not pull in the whole service.
    if name == "ImageService":
        from app.engine.service import ImageService

        return ImageService
    raise AttributeError(name)
