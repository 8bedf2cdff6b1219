"""The memory model on real SDXL numbers: which cards get which mode, what is refused, what is capped.

The footprint's parameter counts and activation figures are checked against the real architecture in
test_sdxl_meta.py; here they answer the questions an operator asks about a card.
"""

from __future__ import annotations

import pytest

from app.engine.gpu import memory
from app.engine.gpu.memory import Call, Decode, GiB
from app.engine.gpu.residency import choose_mode

SDXL = memory.FOOTPRINTS["sdxl"]
FP16 = 2


def _call(side: int = 1024, images: int = 1, upcast: bool = True) -> Call:
    return Call(side, side, images, True, FP16, upcast)


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
