"""Opt-in `torch.compile` of the default model (SDXL_TORCH_COMPILE), on the GPU owner's thread only.

What is compiled, and why that way:
- the UNet's transformer blocks, regionally (diffusers' `compile_repeated_blocks`): SDXL's UNet repeats one block
  class 70 times, so one compiled block serves them all and compile time is that of a block, not of the UNet;
- the VAE's decoder, whole (it has no repeated block), on CUDA and MPS only. On CPU torch picks oneDNN or its own
  convolution by input size (batch 1 with fewer than 20,480 input values: its own) and oneDNN may hand back a
  channels-last tensor: each choice is a graph of its own, so requests of new sizes would compile again. Inductor
  on CPU calls the same oneDNN kernels for the convolutions, which are the decoder's cost, so it gains little there;
- both with `dynamic=True`, so batch sizes, image sizes and prompt lengths share one graph. torch still
  specialises a dimension of size 1, so one UNet row (batch 1 without guidance) and one decoded image each need a
  graph of their own, and two equal sizes ("duck sizing") are assumed equal until a call shows otherwise: the
  startup warm-up runs those shapes, not square (see `WARM_UP_SHAPES`), and no request pays a compile.

LoRA: PEFT wraps the UNet's linear layers, which invalidates every compiled graph (even with the adapters
disabled). A call with a LoRA therefore runs uncompiled (`eager()`), and the adapters are unloaded before the next
call without one (adapters.py), which puts back the very layers the graphs were compiled for.

Every graph compiled is counted and timed through a wrapping backend (the time is inductor's; dynamo's tracing
before it, a few seconds per graph here, is not in it): after the warm-up, a compile means a request waited for it,
so it is logged as a warning.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

logger = logging.getLogger(__name__)

_MARK = "_sdxl_compiled"

# (images in the call, guidance on) that the warm-up runs, not square, so that each graph torch specialises exists
# before the first request: (1, True) two UNet rows and one decoded image; (1, False) one UNet row; (2, False) a
# batch decode.
WARM_UP_SHAPES = ((1, True), (1, False), (2, False))


class Compiler:
    """Compiles pipelines with inductor, counting and timing each graph. `on_graph(part, seconds)` runs on the
    owner's thread for every graph (Prometheus is thread-safe)."""

    def __init__(self, on_graph: Callable[[str, float], None] | None = None) -> None:
        self.graphs: dict[str, int] = {"unet": 0, "vae_decoder": 0}
        self.failures = 0  # graphs inductor could not build: they run eager (FX's own forward)
        self.seconds = 0.0
        self.warmed = False  # set after the startup warm-up: a later compile made a request wait
        self._on_graph = on_graph

    def _backend(self, part: str) -> Callable[[Any, list[Any]], Any]:
        def backend(graph: Any, example_inputs: list[Any]) -> Any:
            from torch._dynamo.backends.registry import lookup_backend
            from torch._dynamo.exc import RestartAnalysis

            started = time.perf_counter()
            try:
                compiled = lookup_backend("inductor")(graph, example_inputs)
            except RestartAnalysis:  # dynamo's own control flow: it traces again and calls us back
                raise
            except Exception as exc:  # no C compiler, an inductor bug: serve this graph eager rather than fail calls
                self.failures += 1
                logger.error(
                    "torch.compile: inductor could not build a %s graph (%s: %s); it runs uncompiled",
                    part,
                    type(exc).__name__,
                    str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "",
                )
                return graph.forward
            seconds = time.perf_counter() - started
            self.graphs[part] += 1
            self.seconds += seconds
            log = logger.warning if self.warmed else logger.info
            log(
                "torch.compile: a %s graph (%d so far) compiled in %.1fs%s",
                part,
                self.graphs[part],
                seconds,
                " after the warm-up: a request waited for it" if self.warmed else "",
            )
            if self._on_graph is not None:
                self._on_graph(part, seconds)
            return compiled

        return backend

    def compile(self, pipe: Any, decoder: bool) -> None:
        """Compile `pipe`'s UNet blocks (and its VAE decoder, if `decoder`) in place. Lazily: the graphs are built
        by the first calls."""
        # No gradients in a server; and PEFT turns `requires_grad` off when it loads a LoRA, which would fail the
        # graphs' guards after the LoRA is unloaded again. Off from the start, nothing changes.
        pipe.unet.requires_grad_(False)
        pipe.vae.requires_grad_(False)
        pipe.unet.compile_repeated_blocks(backend=self._backend("unet"), dynamic=True)
        if decoder:
            pipe.vae.decoder.compile(backend=self._backend("vae_decoder"), dynamic=True)
        setattr(pipe.unet, _MARK, True)
        logger.info("torch.compile: the UNet's transformer blocks%s, dynamic shapes", " and the VAE decoder" * decoder)


def is_compiled(pipe: Any) -> bool:
    return bool(getattr(getattr(pipe, "unet", None), _MARK, False))


@contextlib.contextmanager
def eager(active: bool = True) -> Iterator[None]:
    """Within: compiled modules run their Python code, and nothing is compiled (for calls with a LoRA)."""
    if not active:
        yield
        return
    import torch

    with torch.compiler.set_stance("force_eager"):
        yield
