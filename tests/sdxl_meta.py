"""The real SDXL architecture on the `meta` device: sizes and activation memory without weights or a download.

`build(component)` instantiates one real-size SDXL component from the configs in `bench/sdxl/`
with every parameter and buffer on `meta` (shapes and dtypes, no storage, no initialisation cost).
`weight_bytes(module, dtype)` is what its weights take once cast to `dtype`. `peak_activation_bytes(fn)` runs
`fn` under `ActivationTracker` and returns the most bytes that tensors created by its ops held at once.

Run `python -m tests.sdxl_meta` for the memory table (VAE decode and UNet forward at several sizes).

What the tracker sees, and what it cannot:
- every aten op's output storages, as the caller's allocator would hold them: a new storage counts its full
  `nbytes()` from the op that made it until the last tensor on it dies; outputs that share an input's storage
  (views, in-place ops) add nothing. Tensors made before the tracker started (weights, the inputs) are not counted.
- not a kernel's private workspace (cuDNN convolution workspaces, cuBLAS workspaces), allocator rounding and
  fragmentation, nor the CUDA context: a real GPU's `max_memory_allocated` is higher by those.
- on `meta`, `F.scaled_dot_product_attention` takes the math path (upcast to fp32, the whole attention matrix
  materialised). A GPU with flash or memory-efficient attention never holds that matrix: `fused_attention()`
  stands in for such a kernel (it allocates the output only).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from bench.sdxl import COMPONENTS as COMPONENTS
from bench.sdxl import component
from bench.sdxl import config as config

# Parameter counts of the real SDXL 1.0 components (FIELD-NOTES, counted on meta from the published configs).
PARAMS = {
    "unet": 2_567_463_684,
    "refiner_unet": 2_259_526_660,
    "vae": 83_653_863,
    "controlnet": 1_251_014_160,
    "text_encoder": 123_060_480,
    "text_encoder_2": 694_659_840,
}


def build(name: str) -> torch.nn.Module:
    """One real-size SDXL component with all its parameters and buffers on `meta`, in fp32 (the classes' default)."""
    with torch.device("meta"):
        module: torch.nn.Module = component(name)
        return module


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def weight_bytes(module: torch.nn.Module, dtype: torch.dtype) -> int:
    """Bytes of the module's parameters and buffers after `module.to(dtype)` (which casts floating point only)."""
    seen: set[int] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) in seen:  # tied weights count once
            continue
        seen.add(id(t))
        itemsize = dtype.itemsize if t.is_floating_point() else t.element_size()
        total += t.numel() * itemsize
    return total


def _storage_key(t: torch.Tensor) -> int:
    # The StorageImpl's address: the same for every view of one storage, and unique while it lives. (On meta
    # `data_ptr()` is 0 for every tensor, so it cannot tell storages apart.)
    return int(t.untyped_storage()._cdata)


class ActivationTracker(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch's __init_subclass__
    """Live bytes of the storages that ops create, and their peak.

    For each op, an output whose storage is not one of the op's inputs' and not already tracked is a new
    allocation: its storage's bytes are added. Every tensor (view or not) on a tracked storage gets a finalizer;
    when the last one dies, the storage's bytes are subtracted.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.current = 0
        self.peak = 0
        self.allocations = 0
        self._bytes: dict[int, int] = {}
        self._refs: dict[int, int] = {}

    def _release(self, key: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.current -= self._bytes.pop(key)

    def _hold(self, t: torch.Tensor, key: int) -> None:
        self._refs[key] += 1
        weakref.finalize(t, self._release, key)

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {_storage_key(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            key = _storage_key(t)
            if key in self._bytes:  # a view of (or the same tensor as) something we track
                self._hold(t, key)
            elif key not in inputs:  # a new storage
                nbytes = t.untyped_storage().nbytes()
                self._bytes[key] = nbytes
                self._refs[key] = 0
                self._hold(t, key)
                self.current += nbytes
                self.allocations += 1
                self.peak = max(self.peak, self.current)
            # else: a view of a weight or of an input made before tracking started: not an allocation
        return out


def peak_activation_bytes(fn: Callable[[], Any]) -> int:
    """The peak live bytes of tensors created while `fn()` runs (its result included while it is alive)."""
    with ActivationTracker() as tracker:
        fn()
    return int(tracker.peak)


def _flash_like_sdpa(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any
) -> torch.Tensor:
    # What a fused (flash / memory-efficient) kernel allocates: the output only. (Flash also returns a
    # logsumexp of batch*heads*queries fp32 values: under 0.1 % of the output here, left out.)
    return query.new_empty((*query.shape[:-1], value.shape[-1]))


@contextlib.contextmanager
def fused_attention() -> Iterator[None]:
    """Within: `F.scaled_dot_product_attention` allocates its output only, never the attention matrix."""
    functional: Any = torch.nn.functional
    original = functional.scaled_dot_product_attention
    functional.scaled_dot_product_attention = _flash_like_sdpa
    try:
        yield
    finally:
        functional.scaled_dot_product_attention = original


# --- the measurements ---------------------------------------------------------------------------------------


def vae_decode_peak(vae: Any, height: int, width: int, *, batch: int = 1) -> int:
    """Peak activation bytes of `vae.decode` of `batch` latents to `height` x `width` images, in the VAE's dtype."""
    dtype = next(vae.parameters()).dtype
    latents = torch.empty(batch, 4, height // 8, width // 8, device="meta", dtype=dtype)
    with torch.no_grad():
        return peak_activation_bytes(lambda: vae.decode(latents).sample)


def set_vae_memory_options(vae: Any, *, slicing: bool, tile: int) -> None:
    """diffusers' per-image decode (`enable_slicing`) and tiled decode with `tile`-pixel tiles (0: no tiling).

    `enable_tiling()` alone uses tiles of `config.sample_size` pixels: 1024 for SDXL's VAE (latent 128)."""
    vae.enable_slicing() if slicing else vae.disable_slicing()
    if tile:
        vae.enable_tiling()
        vae.tile_sample_min_size = tile
        vae.tile_latent_min_size = tile // 8
    else:
        vae.disable_tiling()


def unet_forward_peak(unet: Any, height: int, width: int, *, batch: int = 1) -> int:
    """Peak activation bytes of one SDXL UNet forward with classifier-free guidance (2*batch rows)."""
    dtype = next(unet.parameters()).dtype
    rows = 2 * batch
    cfg = unet.config
    sample = torch.empty(rows, cfg.in_channels, height // 8, width // 8, device="meta", dtype=dtype)
    timestep = torch.empty(rows, device="meta", dtype=torch.int64)
    context = torch.empty(rows, 77, cfg.cross_attention_dim, device="meta", dtype=dtype)
    time_ids = 6 if cfg.projection_class_embeddings_input_dim == 2816 else 5  # the refiner: aesthetic score
    text_embeds_dim = cfg.projection_class_embeddings_input_dim - time_ids * cfg.addition_time_embed_dim
    added = {
        "text_embeds": torch.empty(rows, text_embeds_dim, device="meta", dtype=dtype),
        "time_ids": torch.empty(rows, time_ids, device="meta", dtype=dtype),
    }
    with torch.no_grad():
        return peak_activation_bytes(lambda: unet(sample, timestep, context, added_cond_kwargs=added).sample)


def _gib(n: float) -> str:
    return f"{n / 2**30:.3f}"


def main() -> None:  # pragma: no cover - a report, not a test
    import time

    print("weights (GiB): component, params, fp16, fp32")
    for name in COMPONENTS:
        module = build(name)
        print(
            f"  {name}: {param_count(module):,} "
            f"{_gib(weight_bytes(module, torch.float16))} {_gib(weight_bytes(module, torch.float32))}"
        )

    vae = build("vae")
    print("VAE decode, one image: size, dtype, peak GiB, bytes per output pixel, seconds")
    for dtype in (torch.float32, torch.float16):
        vae.to(dtype)
        for side in (512, 1024, 2048):
            for label, ctx in (("math SDPA", contextlib.nullcontext()), ("fused SDPA", fused_attention())):
                t0 = time.perf_counter()
                with ctx:
                    peak = vae_decode_peak(vae, side, side)
                dt = time.perf_counter() - t0
                print(f"  {side}² {dtype} {label}: {_gib(peak)} {peak / side**2:.1f} {dt:.2f}s")

    print("VAE decode with slicing / tiling (fused SDPA): case, dtype, peak GiB, bytes per output pixel, seconds")
    for dtype in (torch.float32, torch.float16):
        vae.to(dtype)
        for side, batch in ((1024, 4), (2048, 1)):
            for slicing, tile in ((False, 0), (True, 0), (False, 1024), (True, 1024), (False, 512), (True, 512)):
                if slicing and batch == 1:
                    continue
                set_vae_memory_options(vae, slicing=slicing, tile=tile)
                t0 = time.perf_counter()
                with fused_attention():
                    peak = vae_decode_peak(vae, side, side, batch=batch)
                dt = time.perf_counter() - t0
                case = f"{batch}x{side}² slicing={slicing} tile={tile or 'off'}"
                print(f"  {case} {dtype}: {_gib(peak)} {peak / (batch * side**2):.1f} {dt:.2f}s")
        set_vae_memory_options(vae, slicing=False, tile=0)

    unet = build("unet").to(torch.float16)
    print("UNet forward fp16 (CFG, 2B rows): size, B, attention, peak GiB, bytes per output pixel per image, s")
    for side in (512, 1024):
        for batch in (1, 2, 4):
            for label, ctx in (("math SDPA", contextlib.nullcontext()), ("fused SDPA", fused_attention())):
                t0 = time.perf_counter()
                with ctx:
                    peak = unet_forward_peak(unet, side, side, batch=batch)
                dt = time.perf_counter() - t0
                print(f"  {side}² B={batch} {label}: {_gib(peak)} {peak / (batch * side**2):.1f} {dt:.2f}s")


if __name__ == "__main__":  # pragma: no cover
    main()
