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
from typing import Any

__all__ = ["TINY_VERSION", "TinyModelPaths", "ensure_tiny_models"]

TINY_VERSION = "tiny-v2"
"""Name of the directory under the cache dir; bump it whenever the architecture or seeding changes."""

_MARKER = "complete.json"
_TMP_PREFIX = f".{TINY_VERSION}-building-"
_STALE_TMP_AGE_S = 3600.0
_SEED = 0
_MAX_LENGTH = 77

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
    with torch.random.fork_rng(devices=[]):
        base, refiner = _make_pipelines(_SEED)
        base.save_pretrained(paths.base, safe_serialization=True)
        refiner.save_pretrained(paths.refiner, safe_serialization=True)
        base_b, _ = _make_pipelines(_SEED + 1000)
        base_b.save_pretrained(paths.base_b, safe_serialization=True)
        _make_vae(_SEED + 2000).save_pretrained(paths.vae_b, safe_serialization=True)
        _make_controlnet(base.unet, _SEED + 3000).save_pretrained(paths.controlnet, safe_serialization=True)
        _save_lora(base, paths.loras, _SEED + 4000)

    marker = {
        "format": TINY_VERSION,
        "seed": _SEED,
        "peft": _version("peft"),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }
    (out / _MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _make_vae(seed: int) -> Any:
    import diffusers
    import torch

    torch.manual_seed(seed)
    return diffusers.AutoencoderKL(  # type: ignore[no-untyped-call]
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),  # 4 blocks -> 3 downsamplings -> vae_scale_factor 8, as in SDXL
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=256,
        scaling_factor=0.13025,
        force_upcast=False,
    )


def _make_controlnet(unet: Any, seed: int) -> Any:
    """A ControlNet copied from the base UNet, as ControlNet training starts.

    Its "zero" convolutions (the conditioning embedding's output and every residual output) start at zero, which
    would make it a no-op; random small weights there make the control image and conditioning scale matter.
    """
    import diffusers
    import torch

    controlnet = diffusers.ControlNetModel.from_unet(unet)
    torch.manual_seed(seed)
    with torch.no_grad():
        # The control image enters through the embedding's output; the network's group norms flatten much of
        # it again, so it gets large weights to stay visible in a 2-step picture.
        controlnet.controlnet_cond_embedding.conv_out.weight.normal_(0.0, 5.0)
        for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            conv.weight.normal_(0.0, 0.2)
    return controlnet


def _save_lora(base: Any, directory: Path, seed: int) -> None:
    """A rank-4 LoRA on the base UNet's attention projections, with random (not zero) up-weights."""
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    config = LoraConfig(
        r=4,
        lora_alpha=4,
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        init_lora_weights=False,  # True would zero lora_B: an adapter that changes nothing
    )
    base.unet.add_adapter(config, adapter_name="tiny")
    layers = get_peft_model_state_dict(base.unet, adapter_name="tiny")
    type(base).save_lora_weights(directory, unet_lora_layers=layers, weight_name="tiny-lora.safetensors")
    base.unet.delete_adapters("tiny")


def _make_pipelines(first_seed: int) -> tuple[Any, Any]:
    import diffusers as _diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    # diffusers' constructors are untyped; go through an Any-typed handle instead of silencing each call.
    diffusers: Any = _diffusers

    seeds = iter(range(first_seed, first_seed + 100))

    def seeded() -> None:
        # A fixed, distinct seed per module: deterministic, and the two text encoders do not come out as twins
        # (their hidden states are concatenated; identical halves would hide a swapped-encoder bug).
        torch.manual_seed(next(seeds))

    tokenizer = _make_tokenizer()
    tokenizer_2 = _make_tokenizer()

    hidden = 32
    projection = 32
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=projection,
        max_position_embeddings=_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    seeded()
    text_encoder = CLIPTextModel(text_config)
    seeded()
    text_encoder_2 = CLIPTextModelWithProjection(text_config)

    time_embed_dim = 8
    hidden_1 = hidden_2 = hidden  # both encoders share one config
    projection_2 = projection

    def unet(cross_attention_dim: int, n_time_ids: int) -> Any:
        seeded()
        return diffusers.UNet2DConditionModel(
            sample_size=32,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=32,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            transformer_layers_per_block=(1, 2),
            cross_attention_dim=cross_attention_dim,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_embed_dim,
            # time ids (each embedded to time_embed_dim) + pooled text embeds of text_encoder_2
            projection_class_embeddings_input_dim=n_time_ids * time_embed_dim + projection_2,
        )

    # Base: 6 time ids (original size, crop coords, target size); prompt embeds of both encoders concatenated.
    base_unet = unet(cross_attention_dim=hidden_1 + hidden_2, n_time_ids=6)
    # Refiner: 5 time ids (original size, crop coords, aesthetic score); text_encoder_2 only.
    refiner_unet = unet(cross_attention_dim=hidden_2, n_time_ids=5)

    vae = _make_vae(next(seeds))

    def scheduler() -> Any:
        return diffusers.EulerDiscreteScheduler(
            num_train_timesteps=1000,
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            prediction_type="epsilon",
            interpolation_type="linear",
            use_karras_sigmas=False,
            timestep_spacing="leading",
            steps_offset=1,
        )

    base = diffusers.StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=base_unet,
        scheduler=scheduler(),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    # The real refiner ships the same text_encoder_2 and VAE as the base; share the objects so the saved copies
    # are identical and loading the refiner with the base's modules is faithful.
    refiner = diffusers.StableDiffusionXLImg2ImgPipeline(
        vae=vae,
        text_encoder=None,
        text_encoder_2=text_encoder_2,
        tokenizer=None,
        tokenizer_2=_make_tokenizer(),
        unet=refiner_unet,
        scheduler=scheduler(),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )
    return base, refiner


# ----------------------------------------------------------------------------------------------------- tokenizer

# A few BPE merges so that the tokenizer exercises merging, not only single bytes.
_MERGES: tuple[tuple[str, str], ...] = (
    ("t", "h"),
    ("i", "n"),
    ("a", "n"),
    ("e", "r"),
    ("o", "n</w>"),
    ("th", "e</w>"),
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character map."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def _write_tokenizer_files(directory: Path) -> None:
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    tokens += [a + b for a, b in _MERGES if a + b not in tokens]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES)
    (directory / "merges.txt").write_text(merges, encoding="utf-8")


def _make_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="tiny-clip-tokenizer-") as d:
        _write_tokenizer_files(Path(d))
        return CLIPTokenizer.from_pretrained(d, model_max_length=_MAX_LENGTH)
