"""The memory model: what a pipeline call needs on the device, before it runs.

Pure arithmetic over plain numbers (no torch here), so the event loop can admit or refuse a request without
touching the GPU owner, and the owner can decide what must leave the device before a batch. The numbers for
each model family are in `FOOTPRINTS`; tests/engine/gpu/test_memory_model.py checks them against the real SDXL
architecture instantiated on the `meta` device (real configs, no weights) and against the tiny models.

A call's peak is the weights resident on the device plus the larger of two phases (they never overlap: the UNet's
activations are freed before the VAE decodes):
- denoising: the UNet's live activations, proportional to output pixels x rows (images, twice with guidance, since
  classifier-free guidance runs the conditional and the unconditional row) x bytes per element;
- decoding: the VAE's live activations, proportional to the pixels decoded at once x bytes per element, in float32
  when the VAE must be upcast (`force_upcast`, true for SDXL's stock VAE, in float16 only: diffusers decodes a
  bfloat16 VAE as it is). Slicing decodes one image at a time;
  tiling decodes one tile at a time, so neither batch nor size then raise the decode peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

GiB = 1024**3
RESIDENT, SWAP = "resident", "swap"
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class Footprint:
    """One model family's architecture, as the memory model needs it."""

    unet_params: int
    refiner_unet_params: int
    vae_params: int
    text_encoder_params: int  # both text encoders
    controlnet_params: int
    unet_per_pixel: float  # peak live UNet activation bytes per output pixel, per row, per element byte
    refiner_per_pixel: float  # the same for the refiner's UNet
    decode_per_pixel: float  # peak live VAE-decode activation bytes per output pixel, per element byte
    tile: int  # the side (in pixels) of one tile when decoding tiled
    overhead: int  # bytes the model does not see: kernels' workspaces, the allocator's rounding

    def weights(self, dtype_bytes: int, *, refiner: bool = False) -> int:
        """The base pipeline's weights (and the refiner's own UNet: it borrows the base's encoder and VAE)."""
        params = self.unet_params + self.vae_params + self.text_encoder_params
        return (params + (self.refiner_unet_params if refiner else 0)) * dtype_bytes


FOOTPRINTS = {
    # Parameter counts of the published SDXL 1.0 configs; activation figures measured on `meta` (see tests).
    "sdxl": Footprint(
        unet_params=2_567_463_684,
        refiner_unet_params=2_259_526_660,
        vae_params=83_653_863,
        text_encoder_params=123_060_480 + 694_659_840,
        controlnet_params=1_251_014_160,
        unet_per_pixel=79.0,
        refiner_per_pixel=95.0,
        decode_per_pixel=768.0,
        tile=512,
        overhead=GiB // 2,
    ),
    # The built-in tiny models (app/engine/models/tiny/parts.py), measured the same way.
    "tiny": Footprint(
        unet_params=1_360_740,
        refiner_unet_params=1_326_948,
        vae_params=67_231,
        text_encoder_params=66_516,
        controlnet_params=1_094_576,
        unet_per_pixel=7.0,
        refiner_per_pixel=7.0,
        decode_per_pixel=41.0,
        tile=256,
        overhead=0,
    ),
}


@dataclass(frozen=True)
class Memory:
    """What the owner measured at startup and the event loop keeps: the card, and how the models share it."""

    budget: int | None  # bytes the service may use on the device; None: unknown (CPU), nothing is refused
    mode: str  # RESIDENT: base and refiner both stay on the device; SWAP: their UNets take turns
    dtype_bytes: int
    base_bytes: int  # the default model's weights as loaded (its VAE and text encoders included)
    upcast_vae: bool  # the default model's VAE decodes in float32 (force_upcast in float16)
    reason: str = ""  # why this mode, for the log and /models
    # The weights are float16, the one dtype in which diffusers upcasts a force_upcast VAE to decode (its check is
    # `vae.dtype == torch.float16`; bfloat16 has float32's range).
    float16: bool = False


@dataclass(frozen=True)
class Decode:
    sliced: bool  # one image at a time
    tiled: bool  # one tile at a time


@dataclass(frozen=True)
class Call:
    """What one pipeline call asks of the memory model."""

    width: int
    height: int
    images: int
    guidance: bool  # classifier-free guidance: two UNet rows per image
    dtype_bytes: int
    upcast_vae: bool  # decode in float32
    refiner: bool = False  # the refiner's UNet runs too (refine, ensemble)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decode_bytes(self) -> int:
        return 4 if self.upcast_vae else self.dtype_bytes


def unet_bytes(fp: Footprint, call: Call) -> int:
    rows = call.images * (2 if call.guidance else 1)
    per_pixel = max(fp.unet_per_pixel, fp.refiner_per_pixel) if call.refiner else fp.unet_per_pixel
    return math.ceil(per_pixel * call.pixels * rows * call.dtype_bytes)


TILED_OUTPUT = 6  # bytes per pixel per element byte: decoded tiles (3 channels) kept, then joined into one image


def decode_bytes(fp: Footprint, call: Call, decode: Decode) -> int:
    images = 1 if decode.sliced else call.images
    if not decode.tiled or call.pixels <= fp.tile * fp.tile:
        return math.ceil(fp.decode_per_pixel * call.pixels * images * call.decode_bytes)
    tile = fp.decode_per_pixel * fp.tile * fp.tile
    return math.ceil((tile + TILED_OUTPUT * call.pixels) * images * call.decode_bytes)


def activations(fp: Footprint, call: Call, decode: Decode) -> int:
    """The call's peak above the resident weights."""
    return max(unet_bytes(fp, call), decode_bytes(fp, call, decode)) + fp.overhead


def plan_decode(fp: Footprint, call: Call, room: int | None) -> Decode:
    """Slice every batch (decoding one image at a time costs next to nothing); tile only where one image's decode
    would not fit in `room` (bytes left above the weights; None: no budget), since tiles can show seams."""
    sliced = call.images > 1
    whole = decode_bytes(fp, call, Decode(sliced=True, tiled=False)) + fp.overhead
    return Decode(sliced=sliced, tiled=room is not None and whole > room)


def fits(fp: Footprint, call: Call, room: int | None) -> bool:
    return room is None or activations(fp, call, plan_decode(fp, call, room)) <= room


def most_images(fp: Footprint, call: Call, room: int | None, limit: int) -> int:
    """The most images (up to `limit`) of this call's size that fit in one call: 0 if not even one does."""
    best = 0
    for n in range(1, limit + 1):
        if not fits(fp, _with(call, images=n), room):
            break
        best = n
    return best


def largest_square(fp: Footprint, call: Call, room: int | None, step: int = 64) -> int:
    """The largest side (a multiple of `step`) of a square single image that fits: 0 if none does."""
    side, best = step, 0
    while side <= 4096:
        if not fits(fp, _with(call, width=side, height=side, images=1), room):
            break
        best, side = side, side + step
    return best


def _with(call: Call, **changes: Any) -> Call:
    return replace(call, **changes)


def gib(n: int | float) -> str:
    """Bytes for people: GiB, or MiB below one GiB (the tiny models)."""
    return f"{n / GiB:.1f} GiB" if abs(n) >= GiB else f"{n / 2**20:.1f} MiB"
