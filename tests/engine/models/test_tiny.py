"""The tiny SDXL pair loads and runs exactly like real weights, is deterministic, and is published atomically."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.engine.models.tiny import build as tiny
from app.engine.models.tiny.build import TinyModelPaths, ensure_tiny_models

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Run this module's inference on one intra-op thread.

    Measured on the 2-core box: with torch's default 2 threads and one busy neighbour process (another pytest,
    a server), a 2-step 256x256 generation went from 0.7 s to 15-20 s (threads spin-waiting on each other);
    with 1 thread it stayed at ~1 s. The tiny models gain nothing from a second thread anyway.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TinyModelPaths]:
    cache = tmp_path_factory.mktemp("tiny-cache")
    return cache, ensure_tiny_models(cache)


@pytest.fixture(scope="module")
def pipes(built: tuple[Path, TinyModelPaths]) -> tuple[Any, Any]:
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    _, paths = built
    base = StableDiffusionXLPipeline.from_pretrained(paths.base)  # type: ignore[no-untyped-call]
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(  # type: ignore[no-untyped-call]
        paths.refiner, text_encoder_2=base.text_encoder_2, vae=base.vae
    )
    base.set_progress_bar_config(disable=True)
    refiner.set_progress_bar_config(disable=True)
    return base, refiner


def _generate(base: Any, seed: int, output_type: str = "np") -> Any:
    import torch

    return base(
        "a photo of a cat",
        num_inference_steps=2,
        height=256,
        width=256,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type=output_type,
    ).images


def test_layout(built: tuple[Path, TinyModelPaths]) -> None:
    cache, paths = built
    root = cache / "tiny-v2"
    assert paths == TinyModelPaths(
        base=root / "base",
        refiner=root / "refiner",
        base_b=root / "base-b",
        vae_b=root / "vae-b",
        controlnet=root / "controlnet",
        loras=root / "loras",
    )
    assert (root / "complete.json").is_file()
    for d in (paths.base, paths.refiner, paths.base_b):
        assert (d / "model_index.json").is_file()
        assert (d / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    for d in (paths.vae_b, paths.controlnet):
        assert (d / "config.json").is_file() and (d / "diffusion_pytorch_model.safetensors").is_file()
    assert (paths.loras / "tiny-lora.safetensors").is_file()
    assert root.stat().st_mode & 0o777 == 0o755
    # No temporary build directory is left behind.
    assert sorted(p.name for p in cache.iterdir()) == ["tiny-v2"]


def test_loads_like_real_weights(pipes: tuple[Any, Any]) -> None:
    # From its own module: mypy reads the top-level `diffusers.EulerDiscreteScheduler` as diffusers' dummy class
    # (no config). Its config is a FrozenDict, typed as a dict: read by key.
    from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler

    base, refiner = pipes
    assert refiner.vae is base.vae
    assert refiner.text_encoder_2 is base.text_encoder_2
    assert refiner.text_encoder is None and refiner.tokenizer is None
    assert base.vae_scale_factor == 8
    assert base.unet.config.sample_size * base.vae_scale_factor == 256
    assert base.tokenizer.model_max_length == 77 and base.tokenizer_2.model_max_length == 77
    assert base.unet.config.cross_attention_dim == 64
    assert refiner.unet.config.cross_attention_dim == 32
    assert refiner.config.requires_aesthetics_score is True
    assert refiner.config.force_zeros_for_empty_prompt is False
    assert base.vae.config.scaling_factor == pytest.approx(0.13025)
    assert isinstance(base.scheduler, EulerDiscreteScheduler)
    assert base.scheduler.config["timestep_spacing"] == "leading"


def test_base_generates_deterministically(pipes: tuple[Any, Any]) -> None:
    import numpy as np

    base, _ = pipes
    a = _generate(base, seed=1)
    b = _generate(base, seed=1)
    c = _generate(base, seed=2)
    assert a.shape == (1, 256, 256, 3)
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_refiner_runs_over_base_image(pipes: tuple[Any, Any]) -> None:
    import torch

    base, refiner = pipes
    image = _generate(base, seed=3, output_type="pil")[0]
    refined = refiner(
        "a photo of a cat",
        image=image,
        strength=0.5,
        num_inference_steps=4,
        generator=torch.Generator("cpu").manual_seed(3),
    ).images[0]
    assert refined.size == (256, 256)


def test_second_call_is_fast_and_does_not_rebuild(built: tuple[Path, TinyModelPaths]) -> None:
    cache, paths = built
    marker = cache / "tiny-v2" / "complete.json"
    before = marker.stat().st_mtime_ns
    start = time.perf_counter()
    again = ensure_tiny_models(cache)
    elapsed = time.perf_counter() - start
    assert again == paths
    assert elapsed < 0.5
    assert marker.stat().st_mtime_ns == before


def test_fast_path_does_not_import_torch(built: tuple[Path, TinyModelPaths]) -> None:
    cache, paths = built
    code = (
        "import sys; from pathlib import Path; from app.engine.models.tiny.build import ensure_tiny_models; "
        f"p = ensure_tiny_models(Path({str(cache)!r})); "
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
        "assert not heavy, heavy; print(p.base)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == str(paths.base)


def test_build_is_deterministic(built: tuple[Path, TinyModelPaths], tmp_path: Path) -> None:
    import torch

    _, first = built
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    second = ensure_tiny_models(tmp_path / "other")
    # The build seeds a forked RNG: the caller's global RNG stream is left untouched.
    assert torch.equal(torch.rand(3), expected)
    for rel in ("base/unet", "refiner/unet", "base/vae", "base/text_encoder", "base/text_encoder_2"):
        name = "model.safetensors" if "text_encoder" in rel else "diffusion_pytorch_model.safetensors"
        a = first.base.parent / rel / name
        b = second.base.parent / rel / name
        assert a.read_bytes() == b.read_bytes(), rel
    # The two text encoders are seeded differently, so they are not twins.
    assert (first.base / "text_encoder" / "model.safetensors").read_bytes() != (
        first.base / "text_encoder_2" / "model.safetensors"
    ).read_bytes()


def _fake_build(out: Path) -> None:
    """Stand-in for the torch build: same layout, marker written last."""
    for sub in ("base", "refiner"):
        (out / sub).mkdir()
        (out / sub / "model_index.json").write_text("{}")
    (out / "complete.json").write_text(json.dumps({"format": tiny.TINY_VERSION}))


def test_losing_the_publish_race_keeps_the_winner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    winner = tmp_path / "tiny-v2"

    def racing_build(out: Path) -> None:
        _fake_build(out)
        # Another process publishes while we are still building.
        winner.mkdir()
        _fake_build(winner)
        (winner / "winner").write_text("yes")

    monkeypatch.setattr(tiny, "_build", racing_build)
    paths = ensure_tiny_models(tmp_path)
    assert paths.base == winner / "base"
    assert (winner / "winner").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-v2"]  # our temp copy was discarded


def test_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_build(out: Path) -> None:
        (out / "base").mkdir()
        raise RuntimeError("boom")

    monkeypatch.setattr(tiny, "_build", broken_build)
    with pytest.raises(RuntimeError, match="boom"):
        ensure_tiny_models(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_incomplete_target_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tiny-v2" / "base").mkdir(parents=True)
    monkeypatch.setattr(tiny, "_build", _fake_build)
    with pytest.raises(RuntimeError, match=r"complete\.json"):
        ensure_tiny_models(tmp_path)


def test_stale_temp_dirs_are_cleaned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / ".tiny-v2-building-dead.tmp"
    fresh = tmp_path / ".tiny-v2-building-alive.tmp"
    stale.mkdir()
    fresh.mkdir()
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    monkeypatch.setattr(tiny, "_build", _fake_build)
    ensure_tiny_models(tmp_path)
    assert not stale.exists()
    assert fresh.exists()  # may belong to a process that is still building
