"""The real SDXL architecture on `meta` (tests/sdxl_meta.py): exact sizes, and an activation tracker checked by hand."""

from __future__ import annotations

import gc
import itertools

import pytest
import torch
import torch.nn.functional as F

from tests.sdxl_meta import (
    COMPONENTS,
    PARAMS,
    ActivationTracker,
    build,
    config,
    fused_attention,
    param_count,
    peak_activation_bytes,
    unet_forward_peak,
    vae_decode_peak,
    weight_bytes,
)


@pytest.mark.parametrize("component", COMPONENTS)
def test_real_sizes_on_meta(component: str) -> None:
    module = build(component)
    assert param_count(module) == PARAMS[component]
    assert {t.device.type for t in [*module.parameters(), *module.buffers()]} == {"meta"}
    # Floating-point weights take 2 or 4 bytes each; the text encoders' int64 position_ids (77) stay int64.
    extra = 77 * 8 if component.startswith("text_encoder") else 0
    assert weight_bytes(module, torch.float16) == 2 * PARAMS[component] + extra
    assert weight_bytes(module, torch.float32) == 4 * PARAMS[component] + extra


def test_fixtures_are_sdxl() -> None:
    vae = config("vae")
    assert (vae["force_upcast"], vae["scaling_factor"], vae["sample_size"]) == (True, 0.13025, 1024)
    unet, refiner = config("unet"), config("refiner_unet")
    assert (unet["cross_attention_dim"], unet["projection_class_embeddings_input_dim"]) == (2048, 6 * 256 + 1280)
    assert (refiner["cross_attention_dim"], refiner["projection_class_embeddings_input_dim"]) == (1280, 5 * 256 + 1280)
    assert config("text_encoder")["hidden_size"] + config("text_encoder_2")["hidden_size"] == 2048
    assert config("controlnet")["transformer_layers_per_block"] == unet["transformer_layers_per_block"]


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_tracker_on_a_linear_chain(device: str) -> None:
    """x = relu(linear(x)) per layer: while relu i runs, the previous x, linear i's output and relu i's are alive."""
    dims, rows = [64, 256, 1024, 128, 512], 8
    layers = [torch.nn.Linear(a, b, device=device) for a, b in itertools.pairwise(dims)]
    size = [rows * d * 4 for d in dims]  # fp32 activations; size[0] is the input, made before tracking
    expected_peak = max((size[i - 1] if i > 1 else 0) + 2 * size[i] for i in range(1, len(dims)))
    assert expected_peak == rows * 4 * (256 + 2 * 1024)  # during relu 2: x (256 wide), linear 2's and relu 2's outputs

    x0 = torch.empty(rows, dims[0], device=device)
    with torch.no_grad(), ActivationTracker() as tracker:
        x = x0
        for layer in layers:
            x = F.relu(layer(x))
        alive_at_end = tracker.current
        del x
    assert tracker.peak == expected_peak
    assert alive_at_end == size[-1]  # only the result
    assert tracker.current == 0
    assert tracker.allocations == 2 * len(layers)


def test_tracker_with_grad_counts_what_autograd_saves() -> None:
    layers = [torch.nn.Linear(16, 16) for _ in range(3)]
    with ActivationTracker() as tracker:
        x = torch.empty(4, 16)  # made inside: counted
        for layer in layers:
            x = F.relu(layer(x))
        # relu saves its output for backward: every relu output is alive while the graph is
        assert tracker.current == 4 * 16 * 4 * (1 + len(layers))
        del x
        gc.collect()
    assert tracker.current == 0


def test_tracker_views_inplace_and_weights() -> None:
    weight = torch.nn.Parameter(torch.empty(100, 10, device="meta"))
    with torch.no_grad(), ActivationTracker() as tracker:
        a = torch.ones(1000, device="meta")
        b = a.view(10, 100)
        del a
        c = b[0]
        del b
        assert tracker.current == 4000  # a view keeps the whole storage alive
        c.add_(1)
        assert (tracker.current, tracker.peak, tracker.allocations) == (4000, 4000, 1)
        del c
        assert tracker.current == 0
        w = weight.t()  # a view of a weight is no allocation
        assert tracker.current == 0
        y = w.matmul(torch.empty(100, 3, device="meta"))
        assert tracker.current == 4 * 10 * 3  # the (100, 3) operand was a temporary: gone again
        del w, y
    assert peak_activation_bytes(lambda: torch.empty(5, 5, device="meta", dtype=torch.float16)) == 50


def test_tracker_agrees_with_torch_memtracker_on_a_vae_decode() -> None:
    # From its own module: mypy reads the top-level `diffusers.AutoencoderKL` as diffusers' dummy class.
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    mem_tracker = pytest.importorskip("torch.distributed._tools.mem_tracker")
    vae = build("vae").to(torch.float16)
    assert isinstance(vae, AutoencoderKL)
    latents = torch.empty(1, 4, 32, 32, device="meta", dtype=torch.float16)
    theirs = mem_tracker.MemTracker()
    theirs.track_external(vae)
    with torch.no_grad(), theirs:
        vae.decode(latents)
    (peak,) = theirs.get_tracker_snapshot("peak").values()
    assert vae_decode_peak(vae, 256, 256) == peak[mem_tracker._MemRefType.ACT] > 0


def test_vae_decode_peak_scales_with_pixels_once_attention_is_fused() -> None:
    vae = build("vae").to(torch.float16)
    with fused_attention():
        small, large = vae_decode_peak(vae, 512, 512), vae_decode_peak(vae, 1024, 1024)
    assert large == pytest.approx(4 * small, rel=1e-3)
    assert small / 512**2 == pytest.approx(1536, rel=1e-3)  # fp16: 1536 bytes per output pixel
    # On meta, SDPA takes the math path: a 16384² fp32 attention matrix (twice: scores and softmax) at 1024².
    materialised = vae_decode_peak(vae, 1024, 1024)
    assert materialised >= 2 * 4 * (1024 // 8) ** 4 > large


def test_unet_forward_peak_scales_with_batch() -> None:
    unet = build("unet").to(torch.float16)
    with fused_attention():
        one, two = (unet_forward_peak(unet, 256, 256, batch=b) for b in (1, 2))
    assert two == pytest.approx(2 * one, rel=0.01)
    assert one / 256**2 == pytest.approx(315, rel=0.02)  # fp16, CFG rows: ~315 bytes per output pixel per image
