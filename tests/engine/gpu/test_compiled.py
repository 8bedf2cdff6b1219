"""The VAE decoder's compile (CUDA and MPS only in the service, see compiled.py), proven on CPU: with inductor it
decodes what eager decodes, and dynamic shapes keep one graph per leading-dimension kind across image sizes
wherever torch's CPU convolution makes the same choice (the reason the service leaves it eager on CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from app.engine.gpu.compiled import Compiler, eager, is_compiled
from app.engine.models.tiny.build import ensure_tiny_models


@pytest.fixture(scope="module")
def pipe(model_cache: Path) -> Any:
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline.from_pretrained(  # type: ignore[no-untyped-call]
        str(ensure_tiny_models(model_cache).base), use_safetensors=True, add_watermarker=False
    )


def _decode(pipe: Any, latents: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return pipe.vae.decode(latents).sample  # type: ignore[no-any-return]


def test_a_compiled_decoder_decodes_what_eager_decodes(pipe: Any) -> None:
    seen: list[tuple[str, float]] = []
    compiler = Compiler(lambda part, seconds: seen.append((part, seconds)))
    # Batches of 2 and more always take oneDNN on CPU: one graph for all of these sizes.
    latents = [
        torch.randn(b, 4, h, w, generator=torch.Generator().manual_seed(b + h))
        for b, h, w in ((2, 40, 32), (3, 32, 48), (2, 48, 48))
    ]
    reference = [_decode(pipe, x) for x in latents]
    compiler.compile(pipe, decoder=True)
    assert is_compiled(pipe)
    assert not any(p.requires_grad for p in [*pipe.unet.parameters(), *pipe.vae.parameters()])
    for x, want in zip(latents, reference, strict=True):
        got = _decode(pipe, x)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert compiler.graphs == {"unet": 0, "vae_decoder": 1}, compiler.graphs
    assert [part for part, _ in seen] == ["vae_decoder"] and seen[0][1] > 0

    compiler.warmed = True
    with eager():  # LoRA calls: nothing compiles, the Python code runs
        torch.testing.assert_close(_decode(pipe, latents[0][:1]), reference[0][:1], atol=1e-4, rtol=1e-4)
    assert compiler.graphs["vae_decoder"] == 1


def test_a_graph_inductor_cannot_build_runs_eager(model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: inductor fails (as without a C compiler). The call still decodes, uncompiled."""
    from diffusers import StableDiffusionXLPipeline
    from torch._dynamo.backends import registry

    fresh = StableDiffusionXLPipeline.from_pretrained(  # type: ignore[no-untyped-call]
        str(ensure_tiny_models(model_cache).base), use_safetensors=True, add_watermarker=False
    )
    latents = torch.randn(2, 4, 40, 32, generator=torch.Generator().manual_seed(5))
    want = _decode(fresh, latents)

    def no_compiler(graph: Any, example_inputs: Any) -> Any:
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    original = registry.lookup_backend

    def broken(backend: Any) -> Any:  # dynamo resolves our own backend through it too: only inductor breaks
        return no_compiler if backend == "inductor" else original(backend)

    torch._dynamo.reset()  # no graph cached from the test above
    monkeypatch.setattr(registry, "lookup_backend", broken)
    compiler = Compiler()
    compiler.compile(fresh, decoder=True)
    torch.testing.assert_close(_decode(fresh, latents), want, atol=1e-5, rtol=1e-5)
    assert compiler.failures == 1 and compiler.graphs == {"unet": 0, "vae_decoder": 0}
