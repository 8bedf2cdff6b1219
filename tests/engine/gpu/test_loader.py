"""The loader on real tiny weights: what `from_pretrained` receives, the variant rule and its fallback, the
refiner's local-only load and its startup resolution, and the hint a load that ran out of memory gets.
Fakes appear only to inject faults (out of memory, an unreachable hub)."""

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
from app.engine.gpu import fetch, loader
from app.engine.gpu.variants import variant_for
from app.engine.models.registry import ExtraEntry, build_registry
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


def test_the_refiner_loads_local_files_only_and_borrows_the_base_modules(settings: Settings, spy: Calls) -> None:
    registry = build_registry(settings)
    base = loader.load_model(registry.models["tiny"], settings, CPU32)
    refiner = loader.load_refiner(registry.refiner, settings, CPU32, base)
    [(_, _, kw)] = [call for call in spy if call[0] == "StableDiffusionXLImg2ImgPipeline"]
    assert kw["local_files_only"] is True and kw["use_safetensors"] is True and kw["variant"] is None
    assert kw["text_encoder_2"] is base.text_encoder_2 and kw["vae"] is base.vae
    assert refiner.text_encoder_2 is base.text_encoder_2 and refiner.vae is base.vae
    [(_, _, base_kw)] = [call for call in spy if call[0] == "StableDiffusionXLPipeline"]
    assert base_kw["use_safetensors"] is True and base_kw["local_files_only"] is False  # the default, at startup


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
    for wrong in ("network", "hub cache", "SDXL_DOWNLOAD_MODELS", "local files only"):
        assert wrong not in message, message


def test_resolving_the_refiner_builds_or_checks_local_files(settings: Settings, tmp_path: Path) -> None:
    tiny = build_registry(settings).refiner
    assert fetch.resolve_refiner(tiny, settings, "float32") == str(ensure_tiny_models(settings.cache_dir).refiner)
    directory = ExtraEntry("/models/refiner", str(tmp_path))
    assert fetch.resolve_refiner(directory, settings, "float16") == str(tmp_path)
    gone = ExtraEntry(str(tmp_path / "gone"), str(tmp_path / "gone"))
    with pytest.raises(ModelLoadError) as caught:
        fetch.resolve_refiner(gone, settings, "float16")
    assert f"the refiner {gone.name!r} is not on this machine (FileNotFoundError)" in caught.value.message
    assert "no directory" not in caught.value.message  # the library's text is the log's
    assert "no directory" in (caught.value.cause or "") and "no directory" in caught.value.for_operator
    assert loader.REFINER_HINT in caught.value.message


def test_resolving_a_hub_refiner_fetches_what_its_load_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The variant first, then the regular files when the repo has none; text_encoder_2 and the VAE are
    borrowed from the base, so they are passed (as None) and not fetched. No hub here: the fetch is faked."""
    settings = Settings(model="sdxl-base", refiner_model="someone/refiner", variant="fp16")
    calls: list[dict[str, Any]] = []

    def download(source: str, **kw: Any) -> Path:
        calls.append({"source": source, **kw})
        if kw["variant"] is not None:
            raise ValueError("You are trying to load the model files of the `variant=fp16`, but no such ...")
        return tmp_path

    monkeypatch.setattr(StableDiffusionXLImg2ImgPipeline, "download", download)
    assert fetch.resolve_refiner(build_registry(settings).refiner, settings, "float16") == str(tmp_path)
    expected = {"source": "someone/refiner", "use_safetensors": True, "text_encoder_2": None, "vae": None}
    assert calls == [{**expected, "variant": "fp16"}, {**expected, "variant": None}]


def test_a_hub_refiner_that_cannot_be_fetched_is_named_with_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(model="sdxl-base")
    calls = []

    def unreachable(source: str, **kw: Any) -> Any:  # fault injection: no route to the hub
        calls.append(kw["variant"])
        raise OSError(f"Cannot load model {source}: the model is not fully cached locally")

    monkeypatch.setattr(StableDiffusionXLImg2ImgPipeline, "download", unreachable)
    with pytest.raises(ModelLoadError) as caught:
        fetch.resolve_refiner(build_registry(settings).refiner, settings, "float16")
    message = caught.value.message
    assert calls == ["fp16"]  # not a missing variant: no second fetch
    assert "the refiner 'stabilityai/stable-diffusion-xl-refiner-1.0' is not on this machine (OSError)" in message
    assert "not fully cached" not in message and "not fully cached" in caught.value.for_operator
    assert "SDXL_REFINER_MODEL to a directory" in message and "SDXL_MODEL=tiny" not in message
