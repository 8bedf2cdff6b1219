"""The memory model on real SDXL numbers: which cards get which mode, what is refused, what is capped.

The footprints themselves are checked at the end: against the real SDXL architecture instantiated on `meta` (real
configs in bench/sdxl, no weights; peak live activations by tests/sdxl_meta.py's tracker), and against
the tiny models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from app.engine.gpu import memory
from app.engine.gpu.memory import Call, Decode, GiB
from app.engine.gpu.residency import choose_mode, set_decode
from app.engine.jobs import admission
from app.engine.jobs.items import GenerateParams, Setup
from app.engine.models.tiny.build import ensure_tiny_models
from tests.sdxl_meta import (
    PARAMS,
    build,
    fused_attention,
    param_count,
    peak_activation_bytes,
    unet_forward_peak,
    vae_decode_peak,
)

SDXL = memory.FOOTPRINTS["sdxl"]
FP16 = 2


def _call(side: int = 1024, images: int = 1, upcast: bool = True) -> Call:
    return Call(side, side, images, True, FP16, upcast)


def test_only_float16_decodes_a_force_upcast_vae_in_float32() -> None:
    """diffusers upcasts a force_upcast VAE (SDXL's stock one) to decode only when it is float16 (its check is
    `vae.dtype == torch.float16`): in bfloat16 the decode stays bfloat16, and counting it as float32 doubled its
    estimate (3.0 instead of 1.5 GiB at 1024²), which chose SWAP or tiling where a card had room."""
    item = GenerateParams("p", None, None, None, 1024, 1024, 30, 5.0, 1, Setup("sdxl"))
    fp16 = memory.Memory(None, memory.RESIDENT, FP16, 0, upcast_vae=True, float16=True)
    bf16 = memory.Memory(None, memory.RESIDENT, FP16, 0, upcast_vae=False, float16=False)
    assert admission.call_of(fp16, item).upcast_vae and admission.call_of(fp16, item, upcast=True).upcast_vae
    assert not admission.call_of(bf16, item, upcast=True).upcast_vae  # a per-request force_upcast VAE in bf16
    decode = Decode(sliced=True, tiled=False)
    upcast, kept = (memory.decode_bytes(SDXL, admission.call_of(m, item, upcast=True), decode) for m in (fp16, bf16))
    assert upcast == pytest.approx(2 * kept, rel=0.01) and 1.25 * GiB < kept < 1.75 * GiB


def test_sdxl_weights_in_fp16_match_the_published_sizes() -> None:
    assert SDXL.weights(FP16) / GiB == pytest.approx(6.46, abs=0.01)  # the "base weights 6.46 GiB"
    assert SDXL.refiner_unet_params * FP16 / GiB == pytest.approx(4.21, abs=0.01)


def test_an_upcast_decode_at_1024_costs_about_3_gib_and_an_fp16_safe_one_half() -> None:
    upcast = memory.decode_bytes(SDXL, _call(), Decode(sliced=True, tiled=False))
    safe = memory.decode_bytes(SDXL, _call(upcast=False), Decode(sliced=True, tiled=False))
    assert 2.5 * GiB < upcast < 3.5 * GiB
    assert safe == pytest.approx(upcast / 2, rel=0.01)
    # At 2048² whole: four times as much (the "a 12 GiB decode"); tiled: one tile's worth.
    big = memory.decode_bytes(SDXL, _call(2048), Decode(sliced=True, tiled=False))
    assert big == pytest.approx(4 * upcast, rel=0.01)
    tiled = memory.decode_bytes(SDXL, _call(2048), Decode(sliced=True, tiled=True))
    assert tiled < upcast


@pytest.mark.parametrize(
    ("card_gb", "mode"),
    [(12, memory.SWAP), (16, memory.SWAP), (24, memory.RESIDENT), (80, memory.RESIDENT)],
)
def test_which_cards_keep_base_and_refiner_resident(card_gb: int, mode: str) -> None:
    """The README's table: base + refiner + one 1024² call is ~14.8 GiB, so 12 and 16 GB cards swap the UNets."""
    budget = int(card_gb * 1e9 * 0.95)  # marketing GB, 95 % of it usable
    chosen, reason = choose_mode("auto", budget, SDXL.weights(FP16), SDXL, _call())
    assert chosen == mode, reason


def test_a_batch_is_capped_to_what_fits_and_slicing_keeps_the_decode_per_image() -> None:
    room = int(24e9 * 0.95) - SDXL.weights(FP16)
    cap = memory.most_images(SDXL, _call(), room, 64)
    assert 2 <= cap < 64
    assert memory.plan_decode(SDXL, _call(images=cap), room).sliced
    assert not memory.fits(SDXL, _call(images=cap + 1), room)
    # Unsliced, eight 1024² decodes alone would be ~24 GiB: the batcher would OOM a 24 GB card.
    assert memory.decode_bytes(SDXL, _call(images=8), Decode(sliced=False, tiled=False)) > 23 * GiB


def test_2048_fits_a_16_gb_card_only_tiled_and_a_12_gb_card_says_what_fits() -> None:
    room24 = int(24e9 * 0.95) - SDXL.weights(FP16)
    assert not memory.plan_decode(SDXL, _call(2048), room24).tiled  # a 12 GiB decode fits beside the base
    room16 = int(16e9 * 0.95) - SDXL.weights(FP16)
    assert memory.plan_decode(SDXL, _call(2048), room16).tiled
    assert memory.fits(SDXL, _call(2048), room16)
    room12 = int(12e9 * 0.95) - SDXL.weights(FP16)
    assert memory.fits(SDXL, _call(1024), room12)
    side = memory.largest_square(SDXL, _call(), room12, step=8)
    assert 1024 <= side < 4096
    assert not memory.fits(SDXL, _call(side + 8), room12)


def test_no_budget_refuses_nothing() -> None:
    assert memory.fits(SDXL, _call(2048, images=64), None)
    assert memory.most_images(SDXL, _call(2048), None, 8) == 8
    assert memory.plan_decode(SDXL, _call(2048), None) == Decode(sliced=False, tiled=False)


# --- the footprints against the real architectures ----------------------------------------------------------------
def _per_pixel_unet(unet: torch.nn.Module, side: int) -> float:
    with fused_attention():  # a GPU's SDPA kernels never hold the attention matrix (see tests/sdxl_meta.py)
        return unet_forward_peak(unet, side, side) / (side * side * 2 * FP16)  # 2 rows: guidance


def _per_pixel_decode(vae: torch.nn.Module, side: int, element_bytes: int) -> float:
    with fused_attention():
        return vae_decode_peak(vae, side, side) / (side * side * element_bytes)


def test_sdxl_footprint_counts_are_the_real_architectures() -> None:
    assert SDXL.unet_params == PARAMS["unet"] and SDXL.refiner_unet_params == PARAMS["refiner_unet"]
    assert SDXL.vae_params == PARAMS["vae"] and SDXL.controlnet_params == PARAMS["controlnet"]
    assert SDXL.text_encoder_params == PARAMS["text_encoder"] + PARAMS["text_encoder_2"]


def test_sdxl_activation_figures_are_measured_on_meta() -> None:
    """Peak live activations of the real UNets and VAE at 512² (they scale linearly: test_sdxl_meta.py)."""
    assert _per_pixel_unet(build("unet").to(torch.float16), 512) == pytest.approx(SDXL.unet_per_pixel, rel=0.02)
    refiner = build("refiner_unet").to(torch.float16)
    assert _per_pixel_unet(refiner, 512) == pytest.approx(SDXL.refiner_per_pixel, rel=0.02)
    vae = build("vae")
    assert _per_pixel_decode(vae, 512, 4) == pytest.approx(SDXL.decode_per_pixel, rel=0.01)
    assert _per_pixel_decode(vae.to(torch.float16), 512, 2) == pytest.approx(SDXL.decode_per_pixel, rel=0.01)


def test_the_tiled_decode_the_owner_sets_peaks_where_the_model_says() -> None:
    """residency.set_decode's tiling, on the real VAE: one 1024² image in 512² tiles (fp32, as when upcast)."""
    vae = build("vae")
    call = Call(1024, 1024, 1, True, FP16, upcast_vae=True)
    set_decode(vae, SDXL, Decode(sliced=False, tiled=True))
    with fused_attention():
        measured = vae_decode_peak(vae, 1024, 1024)
    estimate = memory.decode_bytes(SDXL, call, Decode(sliced=False, tiled=True))
    assert measured == pytest.approx(estimate, rel=0.05)
    assert measured < memory.decode_bytes(SDXL, call, Decode(sliced=False, tiled=False)) / 3


def test_tiny_footprint_is_the_tiny_models(model_cache: Path) -> None:
    from diffusers import ControlNetModel, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    paths = ensure_tiny_models(model_cache)
    tiny = memory.FOOTPRINTS["tiny"]
    base = StableDiffusionXLPipeline.from_pretrained(str(paths.base))  # type: ignore[no-untyped-call]
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(paths.refiner))  # type: ignore[no-untyped-call]
    controlnet = ControlNetModel.from_pretrained(str(paths.controlnet))  # type: ignore[no-untyped-call]
    assert tiny.unet_params == param_count(base.unet) and tiny.vae_params == param_count(base.vae)
    assert tiny.text_encoder_params == param_count(base.text_encoder) + param_count(base.text_encoder_2)
    assert tiny.refiner_unet_params == param_count(refiner.unet)
    assert tiny.controlnet_params == param_count(controlnet)
    # Activations: the same tracker on meta copies; the figures are rounded up, never down.
    unet = _tiny_unet_per_pixel(base.unet.to("meta"))
    assert unet <= tiny.unet_per_pixel < unet * 1.05
    decode = _per_pixel_decode(base.vae.to("meta"), 256, 4)
    assert decode <= tiny.decode_per_pixel < decode * 1.05


def _tiny_unet_per_pixel(unet: Any) -> float:
    cfg = unet.config  # a diffusers FrozenDict, read by attribute as tests/sdxl_meta.py's unet_forward_peak does
    side, rows = 256, 2
    sample = torch.empty(rows, cfg.in_channels, side // 8, side // 8, device="meta")
    context = torch.empty(rows, 77, cfg.cross_attention_dim, device="meta")
    text_embeds = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    added = {
        "text_embeds": torch.empty(rows, text_embeds, device="meta"),
        "time_ids": torch.empty(rows, 6, device="meta"),
    }
    timestep = torch.empty(rows, device="meta", dtype=torch.int64)
    with torch.no_grad(), fused_attention():
        peak = peak_activation_bytes(lambda: unet(sample, timestep, context, added_cond_kwargs=added).sample)
    return peak / (side * side * rows * 4)
