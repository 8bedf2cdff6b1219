"""The parts of the tiny models: configs with SDXL's real structure at toy sizes (see build.py for why and how
they are published). Dimension rules that must hold are in ../shared/FIELD-NOTES.md; the important ones are in
comments below.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

MAX_LENGTH = 77


def make_vae(seed: int) -> Any:
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


def make_controlnet(unet: Any, seed: int) -> Any:
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


def save_lora(base: Any, directory: Path, seed: int) -> None:
    """A rank-4 LoRA on the base UNet's attention and on text_encoder_2 (which the refiner shares, so a LoRA
    left active there would leak into /refine), with random (not zero) up-weights."""
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    layers = {}
    for component, targets, key in (
        (base.unet, ["to_q", "to_k", "to_v", "to_out.0"], "unet_lora_layers"),
        (base.text_encoder_2, ["q_proj", "k_proj", "v_proj", "out_proj"], "text_encoder_2_lora_layers"),
    ):
        # init_lora_weights=False: random up-weights; True would zero them, an adapter that changes nothing.
        component.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=False), "tiny")
        layers[key] = get_peft_model_state_dict(component, adapter_name="tiny")
    type(base).save_lora_weights(directory, weight_name="tiny-lora.safetensors", **layers)
    # `base` was saved before and is not used after this, so its adapters are left in place.


def make_pipelines(first_seed: int) -> tuple[Any, Any]:
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

    tokenizer = make_tokenizer()
    tokenizer_2 = make_tokenizer()

    hidden = 32
    projection = 32
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=projection,
        max_position_embeddings=MAX_LENGTH,
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

    vae = make_vae(next(seeds))

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
        tokenizer_2=make_tokenizer(),
        unet=refiner_unet,
        scheduler=scheduler(),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )
    return base, refiner


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


def make_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="tiny-clip-tokenizer-") as d:
        _write_tokenizer_files(Path(d))
        return CLIPTokenizer.from_pretrained(d, model_max_length=MAX_LENGTH)
