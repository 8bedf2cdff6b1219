"""AUTOMATIC1111's settings, lists and controls under /sdapi/v1: options, sd-models, samplers, ... progress, interrupt.

The lists clients only check for (a bot takes a 404 on /cmd-flags for "API unreachable") answer harmless empties.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.api.a1111 import progress as progress_view
from app.api.a1111 import samplers
from app.api.a1111.bodies import json_object
from app.api.deps import CheckpointsDep, ServiceDep
from app.api.response_docs import A1111_ERRORS

router = APIRouter(prefix="/sdapi/v1", tags=["a1111"], responses=A1111_ERRORS)
_ANY_OBJECT = {"requestBody": {"required": False, "content": {"application/json": {"schema": {"type": "object"}}}}}


@router.get("/options", summary="A1111 options (sd_model_checkpoint: the current model's title)")
async def get_options(service: ServiceDep, checkpoints: CheckpointsDep) -> Any:
    current = checkpoints.title(service)
    return {
        "sd_model_checkpoint": current["title"],
        "sd_checkpoint_hash": current["sha256"],
        "sd_vae": "Automatic",
        "CLIP_stop_at_last_layers": 1,
        "samples_format": "png",
    }


@router.post(
    "/options", summary="A1111 options: applies sd_model_checkpoint, ignores the rest", openapi_extra=_ANY_OBJECT
)
async def set_options(request: Request, service: ServiceDep, checkpoints: CheckpointsDep) -> Any:
    """Any JSON object, with or without a Content-Type (Open WebUI posts the whole options dict back)."""
    options = await json_object(request)
    if options.get("sd_model_checkpoint"):
        checkpoints.current = checkpoints.match(service, options["sd_model_checkpoint"])
    return None


@router.get("/sd-models", summary="A1111 checkpoints: our models")
async def sd_models(service: ServiceDep, checkpoints: CheckpointsDep) -> Any:
    return checkpoints.models(service)


@router.get("/samplers", summary="A1111 samplers")
async def list_samplers() -> Any:
    aliases = {label: [alias for alias, of in samplers.ALIASES.items() if of == label] for label in samplers.SAMPLERS}
    return [
        {"name": label, "aliases": [name, *aliases[label]], "options": {}} for label, name in samplers.SAMPLERS.items()
    ]


@router.get("/schedulers", summary="A1111 schedules")
async def list_schedulers() -> Any:
    return [
        {"name": name, "label": label, "aliases": None, "default_rho": -1, "need_inner_model": False}
        for name, label in samplers.SCHEDULES.items()
    ]


@router.get("/sd-vae", summary="A1111 VAEs")
async def sd_vae(service: ServiceDep) -> Any:
    return [{"model_name": name, "filename": name} for name in service.models_info()["vaes"]]


@router.get("/loras", summary="A1111 LoRAs (name them in a prompt as <lora:name:weight>)")
async def loras(service: ServiceDep) -> Any:
    return [{"name": name, "alias": name, "path": name, "metadata": {}} for name in service.models_info()["loras"]]


@router.get("/upscalers", summary="A1111 upscalers: none but 'None'")
async def upscalers() -> Any:
    return [{"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 4}]


@router.get("/embeddings", summary="A1111 embeddings: none")
async def embeddings() -> Any:
    return {"loaded": {}, "skipped": {}}


@router.get("/scripts", summary="A1111 scripts: none")
async def scripts() -> Any:
    return {"txt2img": [], "img2img": []}


@router.get("/cmd-flags", summary="A1111 command-line flags (API only)")
async def cmd_flags() -> Any:
    return {"api": True, "nowebui": True, "lowvram": False, "medvram": False}


@router.get("/latent-upscale-modes", summary="A1111 lists we have nothing for: empty")
@router.get("/prompt-styles", summary="A1111 lists we have nothing for: empty")
@router.get("/face-restorers", summary="A1111 lists we have nothing for: empty")
@router.get("/hypernetworks", summary="A1111 lists we have nothing for: empty")
async def nothing() -> Any:
    return []


@router.get("/progress", summary="A1111 progress of this replica's running job")
async def get_progress(service: ServiceDep) -> Any:
    return progress_view.progress(service.active())


@router.post("/interrupt", summary="A1111 interrupt: stops the running A1111 requests")
async def interrupt(service: ServiceDep, checkpoints: CheckpointsDep) -> Any:
    for job in list(checkpoints.in_flight):
        if job.status.value == "running":
            await service.cancel_job(job.id)
    return {}
