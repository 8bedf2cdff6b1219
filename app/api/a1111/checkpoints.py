"""A1111's checkpoints: our registry models under A1111's names, and the surface's current checkpoint.

A1111 has one process-wide model that `POST /options {"sd_model_checkpoint"}` switches. Ours stays the operator's
default (it is pinned, sized for and paired with the refiner at startup); what a client switches is this surface's
*current checkpoint*, sent as `model` with each later A1111 request. Requests already queued keep the model they
asked for, so a switch takes effect behind running work, and the load itself happens on the GPU owner, in queue
order, with the first request that needs it. The choice is this replica's (per process), like A1111's own.
"""

from __future__ import annotations

import hashlib
from typing import Any

from app.engine import Engine, Job
from app.errors import InvalidRequest


def model_hash(name: str, source: str) -> str:
    """A stable sha256 for a registry entry (of its name and source, not of weight files, which we never read
    whole): the same on every replica with the same registry."""
    return hashlib.sha256(f"{name}\n{source}".encode()).hexdigest()


def sd_model(model: dict[str, Any]) -> dict[str, Any]:
    """One /sd-models entry; `title` is what `sd_model_checkpoint` holds, as in A1111 ("name [shorthash]")."""
    sha256 = model_hash(model["name"], model["source"])
    return {
        "title": f"{model['name']} [{sha256[:10]}]",
        "model_name": model["name"],
        "hash": sha256[:10],
        "sha256": sha256,
        "filename": model["source"],
        "config": None,
    }


class Checkpoints:
    """The surface's state, on the event loop only: the current checkpoint and the A1111 jobs in flight (which
    /interrupt stops)."""

    def __init__(self) -> None:
        self.current: str | None = None  # a registry model name; None: the service's default
        self.in_flight: set[Job] = set()

    def models(self, service: Engine) -> list[dict[str, Any]]:
        info = service.models_info()
        return [sd_model(m) for m in sorted(info["models"], key=lambda m: m["name"] != info["default"])]

    def match(self, service: Engine, value: object, field: str = "sd_model_checkpoint") -> str:
        """A model name for a title, model_name, filename or hash (short or full), or 422 listing the titles."""
        models = self.models(service)
        if isinstance(value, str):
            wanted = value.strip()
            for m in models:
                if wanted in (m["title"], m["model_name"], m["filename"], m["hash"], m["sha256"]):
                    return str(m["model_name"])
        titles = ", ".join(m["title"] for m in models)
        raise InvalidRequest(f"unknown checkpoint {value!r}; choose one of: {titles}", field=field)

    def title(self, service: Engine) -> dict[str, Any]:
        """The current checkpoint's /sd-models entry."""
        models = self.models(service)
        return next((m for m in models if m["model_name"] == self.current), models[0])
