"""The loader on real tiny weights: what `from_pretrained` receives, the variant rule and its fallback, and the
hint a load that ran out of memory gets. Fakes appear only to inject faults (out of memory)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from diffusers import AutoencoderKL, ControlNetModel, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
from pydantic import ValidationError

from app.config import Settings
from app.engine.gpu import loader
from app.engine.gpu.variants import variant_for
from app.engine.models.registry import ExtraEntry
from app.engine.models.tiny.build import ensure_tiny_models
from app.errors import ModelLoadError

CPU32 = loader.Placement("cpu", "float32")
CPU_BF16 = loader.Placement("cpu", "bfloat16")
Calls = list[tuple[str, str, dict[str, Any]]]


@pytest.fixture
def settings(model_cache: Path) -> Settings:
    return Settings(model="tiny", cache_dir=model_cache)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Every `from_pretrained` of these classes (class, path, keyword arguments), passed on to the real one."""
    calls: Calls = []
    for cls in (AutoencoderKL, ControlNetModel, StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline):

        def spied(path: Any, *args: Any, _real: Any = cls.from_pretrained, _name: str = cls.__name__, **kw: Any) -> Any:
            calls.append((_name, str(path), kw))
            return _real(path, *args, **kw)

        monkeypatch.setattr(cls, "from_pretrained", spied)
    return calls


@pytest.mark.parametrize(
    ("load", "part", "cls"),
    [(loader.load_vae, "vae_b", "AutoencoderKL"), (loader.load_controlnet, "controlnet", "ControlNetModel")],
)
def test_a_variant_entry_without_variant_files_loads_the_regular_ones(
    load: Any, part: str, cls: str, settings: Settings, spy: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    directory = getattr(ensure_tiny_models(settings.cache_dir), part)
    assert not list(directory.glob("*.fp16.*"))  # saved without a variant: what sdxl-vae-fp16-fix publishes
    entry = ExtraEntry("mine", str(directory), variant="fp16")
    with caplog.at_level(logging.INFO, logger="app.engine.gpu.variants"):
        module = load(entry, settings, CPU_BF16, local_only=True)
    assert module.dtype == torch.bfloat16
    assert [(c, kw["variant"], kw["use_safetensors"]) for c, _, kw in spy] == [(cls, "fp16", True), (cls, None, True)]
    assert any("has no fp16 files; using its regular files" in r.getMessage() for r in caplog.records)


def test_the_variant_is_ignored_in_float32(settings: Settings, spy: Calls) -> None:
    entry = ExtraEntry("mine", str(ensure_tiny_models(settings.cache_dir).vae_b), variant="fp16")
    assert loader.load_vae(entry, settings, CPU32).dtype == torch.float32
    assert [kw["variant"] for _, _, kw in spy] == [None]  # one load, of the regular files


def test_sdxl_variant_overrides_every_entry() -> None:
    def chosen(setting: str | None, entry: str | None, dtype: str, source: str = "org/repo") -> str | None:
        return variant_for(entry, source, Settings(model="sdxl-base", variant=setting), dtype)

    assert chosen(None, "fp16", "float16") == "fp16" and chosen(None, "fp16", "bfloat16") == "fp16"
    assert chosen(None, "fp16", "float32") is None and chosen(None, None, "float16") is None
    assert chosen("fp16", None, "float32") == "fp16"  # forced: every entry, any dtype
    assert chosen("none", "fp16", "float16") is None and chosen("NONE", "fp16", "float16") is None
    assert chosen("fp16", "fp16", "float16", source="tiny:base") is None  # the tiny models have no variants
    assert Settings(variant=" ").variant is None
    with pytest.raises(ValidationError, match="variant name"):
        Settings(variant="../fp16")


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"),
        RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)"),
    ],
    ids=["torch", "runtime"],
)
@pytest.mark.parametrize("role", ["VAE", "refiner"])
def test_a_load_that_runs_out_of_memory_gets_a_memory_hint_and_no_second_try(
    error: Exception, role: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = AutoencoderKL if role == "VAE" else StableDiffusionXLImg2ImgPipeline
    calls: list[Any] = []

    def out_of_memory(*args: Any, **kw: Any) -> Any:  # fault injection: the device is full
        calls.append(kw["variant"])
        raise error

    monkeypatch.setattr(cls, "from_pretrained", out_of_memory)
    entry = ExtraEntry("big", "org/big", variant="fp16")
    with pytest.raises(ModelLoadError) as caught:
        if role == "VAE":
            loader.load_vae(entry, settings, CPU_BF16, local_only=True)
        else:
            loader.load_refiner(entry, settings, CPU_BF16, SimpleNamespace(text_encoder_2=None, vae=None))
    message = caught.value.message
    assert calls == ["fp16"], "never retried without the variant after running out of memory"
    assert f"could not load the {role} 'big'" in message and "the device has no room" in message
    assert "SDXL_MODEL_CACHE_MAX_MODELS" in message
    for wrong in ("network", "hub cache", "SDXL_DOWNLOAD_MODELS"):
        assert wrong not in message, message
