"""Loading pipelines, VAEs and ControlNets, on whatever device the settings resolve to.

Every model, the built-in tiny one included, goes through the same `from_pretrained` call as real SDXL
weights. torch and diffusers are imported inside the functions so that importing the service stays cheap.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from app.config import Settings
from app.engine.gpu.variants import variant_for, with_variant_fallback
from app.engine.models.registry import ExtraEntry, ModelEntry
from app.engine.versions import LOCK_HINT
from app.errors import ModelLoadError, first_line, is_out_of_memory

logger = logging.getLogger(__name__)

OFFLINE_HINT = "without network access to the model hub, run the built-in offline model with SDXL_MODEL=tiny"
TINY_HINT = f"the built-in tiny models are built locally, so this is the installed packages: {LOCK_HINT}"
LOCAL_ONLY_HINT = (
    "requests may only use weights already in the hub cache or a directory; the operator can fetch them, or set "
    "SDXL_DOWNLOAD_MODELS=true"
)
REFINER_HINT = (
    "the refiner loads from local files only (a hub id is fetched at startup, never on request): fetch it into the "
    "hub cache, or set SDXL_REFINER_MODEL to a directory"
)
# Not a missing file: pointing at the network or the hub cache would send an operator the wrong way.
MEMORY_HINT = (
    "the device has no room for it: keep fewer models resident (SDXL_MODEL_CACHE_MAX_MODELS, "
    "SDXL_MODEL_CACHE_MAX_BYTES), use a half-precision SDXL_DTYPE (float16, bfloat16), or a device with more memory"
)


@dataclass(frozen=True)
class Placement:
    device: str
    dtype_name: str

    @property
    def dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype_name)


def resolve_placement(settings: Settings) -> Placement:
    import torch

    device = settings.device
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    dtype = settings.dtype
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "float16"
    return Placement(device, dtype)


class _NoTorchvisionNotice(logging.Filter):
    """transformers says once per image-processor class that torchvision is missing; SDXL pipelines only name
    CLIPImageProcessor (for IP-Adapter, unused here), so the notice tells an operator nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


_NO_TORCHVISION_NOTICE = _NoTorchvisionNotice()


def quiet_library_output() -> None:
    """We log one line per load ourselves; the libraries' per-file and per-tensor progress bars (carriage returns
    in a server's log) go. Download bars stay: a first start on a GPU fetches gigabytes and should show it."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging
    from huggingface_hub.utils import enable_progress_bars as enable_hub_progress_bars  # type: ignore[attr-defined]

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # also turns off the hub's bars ...
    enable_hub_progress_bars()  # ... which are the download's
    logging.getLogger("transformers.utils.import_utils").addFilter(_NO_TORCHVISION_NOTICE)  # once: same object


def resolve_source(source: str, settings: Settings) -> str:
    """A registry source as `from_pretrained` takes it; "tiny:<part>" is built locally on first use."""
    if not source.startswith("tiny:"):
        return source
    from app.engine.models.tiny.build import ensure_tiny_models

    paths = ensure_tiny_models(settings.cache_dir)
    part = source.removeprefix("tiny:").replace("-", "_")
    return str(getattr(paths, part))


# diffusers points at a traceback that our one-line startup error does not print; the cause is named instead.
_STACKTRACE_ADVICE = re.compile(r"\s*Please check out the root cause in the stacktrace above\.?")


def _first_line(exc: BaseException) -> str:
    return _STACKTRACE_ADVICE.sub("", first_line(exc))


def one_line(exc: BaseException) -> str:
    """The error and, one level down, what caused it: the log line is all an operator gets."""
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return _first_line(exc) + (f"; caused by {_first_line(cause)}" if cause is not None else "")


def load_error(what: str, exc: BaseException, hint: str) -> ModelLoadError:
    """The caller reads what failed, the kind of error and the hint; the library's text goes to the log."""
    cause = one_line(exc)
    logger.warning("%s: %s", what, cause)
    return ModelLoadError(f"{what} ({type(exc).__name__}){hint}", cause=cause)


def _about_packages(exc: BaseException) -> bool:
    """Does a failure building the tiny models point at the installed packages (rather than, say, the disk)?"""
    return isinstance(exc, ImportError) or "version" in str(exc).lower()


def failure_hint(exc: BaseException, tiny: bool, files_hint: str) -> str:
    """What to do about a failed load, as "; advice" (or ""): `files_hint` when the files are what failed."""
    if is_out_of_memory(exc):
        return f"; {MEMORY_HINT}"
    if tiny:  # built here from nothing: no hub involved, so the hub hints would mislead
        return f"; {TINY_HINT}" if _about_packages(exc) else ""
    return f"; {files_hint}"


def _load(
    cls: Any,
    name: str,
    source: str,
    role: str,
    settings: Settings,
    placement: Placement,
    local_only: bool = False,
    variant: str | None = None,
    local_hint: str = LOCAL_ONLY_HINT,
    **kw: Any,
) -> Any:
    started = time.perf_counter()
    tiny = source.startswith("tiny:")
    wanted = variant_for(variant, source, settings, placement.dtype_name)

    def from_pretrained(path: str, variant: str | None) -> Any:
        # use_safetensors: never a pickle (which can run code) from a repo or a directory.
        return cls.from_pretrained(
            path, dtype=placement.dtype, variant=variant, use_safetensors=True, local_files_only=local_only, **kw
        )

    try:
        path = resolve_source(source, settings)  # builds the tiny models on first use: that can fail too
        loaded = with_variant_fallback(lambda v: from_pretrained(path, v), wanted, f"the {role} {name!r}")
        loaded.to(placement.device)
    except Exception as exc:
        logger.debug("loading %s failed", source, exc_info=True)
        hint = failure_hint(exc, tiny, local_hint if local_only else OFFLINE_HINT)
        raise load_error(f"could not load the {role} {name!r}", exc, hint) from exc
    if hasattr(loaded, "set_progress_bar_config"):
        loaded.set_progress_bar_config(disable=True)
    _inference_only(loaded)
    logger.info(
        "loaded %s %r on %s/%s in %.2fs",
        role,
        name,
        placement.device,
        placement.dtype_name,
        time.perf_counter() - started,
    )
    return loaded


def _inference_only(loaded: Any) -> None:
    """No gradients in a server, and switched off here, once, not by the first LoRA: PEFT turns `requires_grad` off
    on every base weight when it loads one, and CPU float16 `linear` takes another kernel for such a weight, so
    every later request without a LoRA gave other images (by up to 2 levels) than before the first one with it."""
    import torch

    modules = loaded.components.values() if hasattr(loaded, "components") else [loaded]
    for module in modules:
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False)


def load_model(
    entry: ModelEntry, settings: Settings, placement: Placement, vae: Any = None, local_only: bool = False
) -> Any:
    """A text-to-image pipeline for a registry entry; `vae` (a loaded module) replaces the model's own."""
    from diffusers import StableDiffusionXLPipeline

    components = {"vae": vae} if vae is not None else {}
    return _load(
        StableDiffusionXLPipeline,
        entry.name,
        entry.source,
        "model",
        settings,
        placement,
        local_only,
        entry.variant,
        add_watermarker=False,
        **components,
    )


def load_vae(entry: ExtraEntry, settings: Settings, placement: Placement, local_only: bool = False) -> Any:
    from diffusers import AutoencoderKL

    return _load(AutoencoderKL, entry.name, entry.source, "VAE", settings, placement, local_only, entry.variant)


def load_controlnet(entry: ExtraEntry, settings: Settings, placement: Placement, local_only: bool = False) -> Any:
    from diffusers import ControlNetModel

    return _load(
        ControlNetModel, entry.name, entry.source, "ControlNet", settings, placement, local_only, entry.variant
    )


def load_refiner(entry: ExtraEntry, settings: Settings, placement: Placement, base: Any) -> Any:
    """The refiner borrows the base's second text encoder and VAE: the same objects, no second copy.

    Local files only, always: a request loads it, and a request must never make the GPU owner fetch gigabytes
    while the queue waits. Its files were made local at startup (fetch.resolve_refiner)."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    return _load(
        StableDiffusionXLImg2ImgPipeline,
        entry.name,
        entry.source,
        "refiner",
        settings,
        placement,
        local_only=True,
        variant=entry.variant,
        local_hint=REFINER_HINT,
        add_watermarker=False,
        text_encoder_2=base.text_encoder_2,
        vae=base.vae,
    )
