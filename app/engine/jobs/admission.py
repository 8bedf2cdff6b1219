"""Admission before out-of-memory: a job whose single image cannot fit on the device is refused at once, naming the
largest size that would; a job that fits gets the most images one of its calls may hold (`batch_cap`), so the
batcher never forms a call that cannot fit. Runs on the event loop, on numbers fixed at startup (`Memory`) and the
memory model (gpu/memory.py): nothing here reads the GPU owner's state.
"""

from __future__ import annotations

from app.engine.gpu import memory
from app.engine.gpu.memory import RESIDENT, SWAP, Call, Footprint, Memory
from app.engine.jobs.items import GenerateParams, RefineParams
from app.engine.models.registry import Registry
from app.errors import DoesNotFit

MIN_SIDE = 256  # the API's smallest width or height (app/schemas.py)


def footprint(registry: Registry, model: str) -> Footprint:
    return memory.FOOTPRINTS[registry.models[model].family]


def resident(mem: Memory, registry: Registry, fp: Footprint, p: GenerateParams | RefineParams) -> int:
    """Bytes of weights that must be on the device while `p` runs (the pinned default always is)."""
    b = mem.dtype_bytes
    refiner_unet = fp.refiner_unet_params * b
    if isinstance(p, RefineParams):
        return mem.base_bytes + (refiner_unet - fp.unet_params * b if mem.mode == SWAP else refiner_unet)
    total = mem.base_bytes
    if p.setup.model != registry.default:  # another model beside the pinned default
        total += footprint(registry, p.setup.model).weights(b)
    if p.setup.vae is not None:
        total += fp.vae_params * b
    if p.control is not None:
        total += fp.controlnet_params * b
    if p.high_noise_frac is not None and mem.mode == RESIDENT:
        total += refiner_unet
    return total


def call_of(mem: Memory, p: GenerateParams | RefineParams, images: int = 1, upcast: bool | None = None) -> Call:
    """What the memory model needs of a call; `upcast`: its VAE's force_upcast (None: the default model's)."""
    if isinstance(p, RefineParams):
        (width, height), refiner = p.size, True
    else:
        (width, height), refiner = (p.width, p.height), p.high_noise_frac is not None
    upcast = mem.upcast_vae if upcast is None else upcast and mem.float16
    return Call(width, height, images, p.guidance > 1, mem.dtype_bytes, upcast, refiner)


def admit(mem: Memory, registry: Registry, p: GenerateParams | RefineParams, limit: int) -> int:
    """The most images of this job one call may hold (at most `limit`); raises DoesNotFit if not even one fits."""
    if mem.budget is None:
        return limit
    model = registry.default if isinstance(p, RefineParams) else p.setup.model
    fp = footprint(registry, model)
    weights = resident(mem, registry, fp, p)
    room = mem.budget - weights
    call = call_of(mem, p)
    cap = memory.most_images(fp, call, room, limit)
    if cap == 0:
        need = weights + memory.activations(fp, call, memory.plan_decode(fp, call, room))
        side = memory.largest_square(fp, call, room, step=8)
        side = side if side >= MIN_SIDE else 0
        fix = (
            f"at most {side}x{side} pixels ({side * side}) fit beside them"
            if side
            else f"not even {MIN_SIDE}x{MIN_SIDE} fits beside them: use the default model, drop the VAE or "
            "ControlNet, or give the service a larger card (SDXL_GPU_MEMORY_GB, a smaller SDXL_DTYPE)"
        )
        if isinstance(p, RefineParams):  # the stored image's size, not a field of the request
            raise DoesNotFit(
                f"refining the stored {call.width}x{call.height} image needs an estimated {memory.gib(need)} of "
                f"device memory and this device has {memory.gib(mem.budget)}; refine an image of at most "
                f"{side}x{side}"
                if side
                else "refining does not fit this device",
                field="id",
            )
        raise DoesNotFit(
            f"a {call.width}x{call.height} image needs an estimated {memory.gib(need)} of device memory and this "
            f"device has {memory.gib(mem.budget)}, {memory.gib(weights)} of it for the weights this call uses; "
            f"{fix}",
            field="width",
            details=[
                {"field": "width", "message": f"at most {side}"},
                {"field": "height", "message": f"at most {side}"},
            ],
        )
    return cap
