"""The loader: the hint a load that ran out of memory gets. Fakes appear only to inject faults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import AutoencoderKL

from app.config import Settings
from app.engine.gpu import loader
from app.engine.models.registry import ExtraEntry
from app.errors import ModelLoadError

CPU32 = loader.Placement("cpu", "float32")


@pytest.fixture
def settings(model_cache: Path) -> Settings:
    return Settings(model="tiny", cache_dir=model_cache)


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"),
        RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)"),
    ],
    ids=["torch", "runtime"],
)
@pytest.mark.parametrize("local_only", [True, False])
def test_a_load_that_runs_out_of_memory_gets_a_memory_hint(
    error: Exception, local_only: bool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(*args: Any, **kw: Any) -> Any:  # fault injection: the device is full
        raise error

    monkeypatch.setattr(AutoencoderKL, "from_pretrained", out_of_memory)
    with pytest.raises(ModelLoadError) as caught:
        loader.load_vae(ExtraEntry("big", "org/big"), settings, CPU32, local_only=local_only)
    message = caught.value.message
    assert "could not load the VAE 'big'" in message and "the device has no room" in message
    assert "SDXL_MODEL_CACHE_MAX_MODELS" in message
    for wrong in ("network", "hub cache", "SDXL_DOWNLOAD_MODELS"):
        assert wrong not in message, message
