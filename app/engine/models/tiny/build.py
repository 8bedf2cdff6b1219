"""Tiny, randomly initialised SDXL models built locally: a base + refiner pair and the extras that exercise the
model registry (a second base, an alternate VAE, a ControlNet and a LoRA).

Why this exists: there is no model hub reachable from where this service is developed and tested, so the tests
and the offline demo need real SDXL *pipelines* that can be produced from nothing.  This module builds them from
configs (fixed seed, so the weights are byte-identical on every run and machine with the same torch), saves them
with ``save_pretrained`` and hands back the directories, which are then loaded exactly like real weights::

    base = StableDiffusionXLPipeline.from_pretrained(paths.base)
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(
        paths.refiner, text_encoder_2=base.text_encoder_2, vae=base.vae)

The pictures are noise; everything else (tokenizers, both text encoders, the text-time conditioning, the
refiner's aesthetic score, the VAE's scale factor of 8, the scheduler, the on-disk layout) is real SDXL.

Concurrency: the pair is built into a temporary sibling directory and published with one atomic ``os.rename``,
so concurrent processes (pytest workers, two servers) never see a half-written model.  Within one process a lock
serialises builds, because seeding uses torch's global RNG.

torch / diffusers / transformers are imported only when a build is actually needed; the fast path (models
already on disk) touches nothing but the standard library.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TINY_VERSION", "TinyModelPaths", "ensure_tiny_models", "is_built"]

TINY_VERSION = "tiny-v2"
"""Name of the directory under the cache dir; bump it whenever the architecture or seeding changes."""

_MARKER = "complete.json"
_TMP_PREFIX = f".{TINY_VERSION}-building-"
_STALE_TMP_AGE_S = 3600.0
_SEED = 0

_build_lock = threading.Lock()


@dataclass(frozen=True)
class TinyModelPaths:
    """Directories loadable with ``from_pretrained`` (the LoRA: a directory of safetensors files)."""

    base: Path
    refiner: Path
    base_b: Path  # a second base with other weights, so that switching models is observable
    vae_b: Path  # an AutoencoderKL with other weights, for per-request VAE choice
    controlnet: Path  # an SDXL ControlNet for the base, with non-zero output convolutions
    loras: Path  # tiny-lora.safetensors, for the base UNet


def _paths(root: Path) -> TinyModelPaths:
    return TinyModelPaths(
        base=root / "base",
        refiner=root / "refiner",
        base_b=root / "base-b",
        vae_b=root / "vae-b",
        controlnet=root / "controlnet",
        loras=root / "loras",
    )


def ensure_tiny_models(cache_dir: Path) -> TinyModelPaths:
    """Return the tiny base/refiner directories under ``cache_dir``, building them first if needed.

    Layout: ``cache_dir/tiny-v2/{base,refiner,base-b,vae-b,controlnet,loras,complete.json}``.  Safe to call
    concurrently from several threads and processes; the first to finish publishes, the others discard their
    copy and use the published one.
    """
    cache_dir = Path(cache_dir)
    root = cache_dir / TINY_VERSION
    paths = _paths(root)
    if _is_complete(root):
        return paths

    with _build_lock:
        if _is_complete(root):  # another thread of this process published meanwhile
            return paths
        if root.exists():
            # Only ever produced by a rename of a complete build, so this is hand-made damage; refuse to guess.
            raise RuntimeError(
                f"{root} exists but has no {_MARKER}; it is not a complete tiny model build. Delete it and retry."
            )
        cache_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp_dirs(cache_dir)
        tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, suffix=".tmp", dir=cache_dir))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it 0700; the published dir should be as readable as its contents
            _build(tmp)
            _publish(tmp, root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return paths


# --------------------------------------------------------------------------------------------------- publishing


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def is_built(cache_dir: Path) -> bool:
    """Whether the tiny models are built in `cache_dir` (only reads: nothing is built)."""
    return _is_complete(cache_dir / TINY_VERSION)


def _is_complete(root: Path) -> bool:
    try:
        marker = json.loads((root / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("format") == TINY_VERSION


def _publish(tmp: Path, root: Path) -> None:
    """Atomically move the finished build ``tmp`` to ``root``; if someone else got there first, keep theirs."""
    try:
        os.rename(tmp, root)
    except OSError:
        # rename(2) onto an existing non-empty directory fails (ENOTEMPTY/EEXIST): we lost the race.
        if not _is_complete(root):
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale_tmp_dirs(cache_dir: Path) -> None:
    """Best effort: delete build dirs left behind by crashed processes (older than an hour)."""
    now = time.time()
    for entry in cache_dir.glob(f"{_TMP_PREFIX}*"):
        try:
            if entry.is_dir() and now - entry.stat().st_mtime > _STALE_TMP_AGE_S:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


# ------------------------------------------------------------------------------------------------------ building


def _build(out: Path) -> None:
    """Build everything into ``out``, then write the marker (last)."""
    import diffusers
    import torch
    import transformers

    paths = _paths(out)
    # fork_rng: seeding for reproducible weights must not disturb the caller's global RNG state.
    from app.engine.models.tiny.parts import make_controlnet, make_pipelines, make_vae, save_lora

    with torch.random.fork_rng(devices=[]):
        base, refiner = make_pipelines(_SEED)
        base.save_pretrained(paths.base, safe_serialization=True)
        refiner.save_pretrained(paths.refiner, safe_serialization=True)
        base_b, _ = make_pipelines(_SEED + 1000)
        base_b.save_pretrained(paths.base_b, safe_serialization=True)
        make_vae(_SEED + 2000).save_pretrained(paths.vae_b, safe_serialization=True)
        make_controlnet(base.unet, _SEED + 3000).save_pretrained(paths.controlnet, safe_serialization=True)
        save_lora(base, paths.loras, _SEED + 4000)

    marker = {
        "format": TINY_VERSION,
        "seed": _SEED,
        "peft": _version("peft"),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }
    (out / _MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
