"""The model registry: every model, VAE, ControlNet and LoRA a request may name.

Requests name entries; only entries are ever loaded. A request never supplies a path or a URL: sources come
from the built-ins below, from SDXL_MODELS_FILE and from the files found in SDXL_LORA_DIR, all chosen by the
operator. Each entry has a family ("sdxl" or "tiny"); extras apply only to models of their family, because a
tiny LoRA does not fit a real SDXL UNet.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app.config import SDXL_BASE, SDXL_REFINER, TINY, TINY_B, Settings
from app.errors import InvalidRequest

SDXL = "sdxl"
TINY_FAMILY = "tiny"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+")  # "org/name"; anything else is a directory
FP16 = "fp16"  # the variant of the SDXL repos' half-precision files (`*.fp16.safetensors`)


@dataclass(frozen=True)
class Defaults:
    size: int
    steps: int
    guidance: float
    refine_steps: int
    scheduler: str | None = None  # a samplers.py name; None: the model's own scheduler
    max_steps: int | None = None  # a model-specific ceiling under SDXL_MAX_STEPS (turbo: 4)


SDXL_DEFAULTS = Defaults(size=1024, steps=30, guidance=5.0, refine_steps=30)
TINY_DEFAULTS = Defaults(size=256, steps=4, guidance=5.0, refine_steps=10)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    source: str  # a hub id, a local directory, or "tiny:<part>" for the built-in tiny models
    family: str = SDXL
    description: str = ""
    defaults: Defaults = SDXL_DEFAULTS
    vae: str | None = None  # a VAE entry swapped in at load time (e.g. the fp16-safe VAE)
    variant: str | None = None  # weights variant the source publishes (loader.variant_for decides when it is used)


@dataclass(frozen=True)
class ExtraEntry:
    """A VAE, ControlNet or LoRA: something a request adds to a model."""

    name: str
    source: str
    family: str | None = SDXL  # None: any model (LoRA files; a misfit is reported when it is loaded)
    weight_name: str | None = None  # LoRA: the file inside `source`
    variant: str | None = None  # as ModelEntry.variant


BUILTIN_MODELS = (
    ModelEntry("sdxl-base", SDXL_BASE, description="Stable Diffusion XL 1.0 base", variant=FP16),
    ModelEntry(
        "sdxl-turbo",
        "stabilityai/sdxl-turbo",
        description="SDXL-Turbo: 1-4 steps without guidance, 512x512",
        defaults=Defaults(size=512, steps=1, guidance=0.0, refine_steps=30, scheduler="euler_a", max_steps=4),
        variant=FP16,
    ),
    ModelEntry(
        "sdxl-anime",
        "cagliostrolab/animagine-xl-4.0",
        description="Animagine XL 4.0",
        defaults=Defaults(size=1024, steps=28, guidance=5.0, refine_steps=30, scheduler="euler_a"),
    ),
    ModelEntry(
        "sdxl-anime-legacy",
        "cagliostrolab/animagine-xl-3.1",
        description="Animagine XL 3.1",
        defaults=Defaults(size=1024, steps=28, guidance=7.0, refine_steps=30, scheduler="euler_a"),
    ),
    ModelEntry(TINY, "tiny:base", TINY_FAMILY, "built-in offline model: random weights, noise pictures", TINY_DEFAULTS),
    ModelEntry(TINY_B, "tiny:base-b", TINY_FAMILY, "a second built-in offline model, other weights", TINY_DEFAULTS),
)
# The Animagine repos and the fp16-fix VAE publish no variant files (the VAE's regular files are fp16-safe).
BUILTIN_VAES = (
    ExtraEntry("sdxl-vae-fp16-fix", "madebyollin/sdxl-vae-fp16-fix"),
    ExtraEntry("tiny-vae-b", "tiny:vae-b", TINY_FAMILY),
)
BUILTIN_CONTROLNETS = (
    ExtraEntry("canny-sdxl", "diffusers/controlnet-canny-sdxl-1.0", variant=FP16),
    ExtraEntry("depth-sdxl", "diffusers/controlnet-depth-sdxl-1.0", variant=FP16),
    ExtraEntry("tiny-controlnet", "tiny:controlnet", TINY_FAMILY),
)
BUILTIN_LORAS = (ExtraEntry("tiny-lora", "tiny:loras", TINY_FAMILY, weight_name="tiny-lora.safetensors"),)


class Registry:
    def __init__(
        self,
        models: dict[str, ModelEntry],
        vaes: dict[str, ExtraEntry],
        controlnets: dict[str, ExtraEntry],
        loras: dict[str, ExtraEntry],
        default: str,
        refiner: ExtraEntry,
    ):
        self.models, self.vaes, self.controlnets, self.loras = models, vaes, controlnets, loras
        self.default = default
        self.refiner = refiner  # a setting, not something a request names: never in the lookups below

    # --- lookups that answer 422 naming the choices ------------------------------------------------
    def model(self, name: str | None, field_name: str = "model") -> ModelEntry:
        if name is None:
            return self.models[self.default]
        entry: ModelEntry = _pick(self.models, name, field_name, "model")
        return entry

    def vae(self, name: str, model: ModelEntry, field_name: str = "vae") -> ExtraEntry:
        return _fits(_pick(self.vaes, name, field_name, "VAE"), model, field_name)

    def controlnet(self, name: str, model: ModelEntry, field_name: str = "controlnet.name") -> ExtraEntry:
        return _fits(_pick(self.controlnets, name, field_name, "ControlNet"), model, field_name)

    def lora(self, name: str, model: ModelEntry, field_name: str) -> ExtraEntry:
        return _fits(_pick(self.loras, name, field_name, "LoRA"), model, field_name)


def _pick(entries: dict[str, Any], name: str, field_name: str, what: str) -> Any:
    try:
        return entries[name]
    except KeyError:
        choices = ", ".join(sorted(entries)) or "none configured"
        raise InvalidRequest(f"unknown {what} {name!r}; choose one of: {choices}", field=field_name) from None


def _fits(entry: ExtraEntry, model: ModelEntry, field_name: str) -> ExtraEntry:
    if entry.family is not None and entry.family != model.family:
        raise InvalidRequest(
            f"{entry.name!r} is made for {entry.family} models and does not fit {model.name!r} ({model.family})",
            field=field_name,
        )
    return entry


def build_registry(settings: Settings) -> Registry:
    """Built-ins, then SDXL_MODELS_FILE (which may override them by name), then SDXL_LORA_DIR."""
    models = {m.name: m for m in BUILTIN_MODELS}
    vaes = {v.name: v for v in BUILTIN_VAES}
    controlnets = {c.name: c for c in BUILTIN_CONTROLNETS}
    loras = {entry.name: entry for entry in BUILTIN_LORAS}
    if settings.models_file is not None:
        _read_models_file(settings.models_file, models, vaes, controlnets)
    if settings.lora_dir is not None:
        loras.update(_scan_loras(settings.lora_dir))
    default = _default_model(settings.model, models)
    _check_references(models, vaes)
    if settings.openai_model is not None and settings.openai_model not in models:
        raise ValueError(f"SDXL_OPENAI_MODEL={settings.openai_model!r} is not a model; choose one of {sorted(models)}")
    return Registry(models, vaes, controlnets, loras, default, refiner_entry(settings))


def refiner_entry(settings: Settings) -> ExtraEntry:
    """SDXL_REFINER_MODEL as an entry: the SDXL refiner publishes fp16 files; another hub id or a directory is
    not assumed to (SDXL_VARIANT can force one)."""
    if settings.refiner == TINY:
        return ExtraEntry(TINY, "tiny:refiner", TINY_FAMILY)
    return ExtraEntry(settings.refiner, settings.refiner, variant=FP16 if settings.refiner == SDXL_REFINER else None)


def _check_references(models: dict[str, ModelEntry], vaes: dict[str, ExtraEntry]) -> None:
    """What a models file names must exist and fit, so a typo stops startup instead of failing requests."""
    from app.engine.models import samplers

    for entry in models.values():
        d = entry.defaults
        if d.scheduler is not None and d.scheduler not in samplers.SAMPLERS:
            raise ValueError(f"model {entry.name!r}: scheduler must be one of {', '.join(samplers.SAMPLERS)}")
        if d.max_steps is not None and (not isinstance(d.max_steps, int) or d.max_steps < 1):
            raise ValueError(f"model {entry.name!r}: max_steps must be a positive integer")
        if entry.vae is not None:
            vae = vaes.get(entry.vae)
            if vae is None or (vae.family is not None and vae.family != entry.family):
                raise ValueError(f"model {entry.name!r}: vae {entry.vae!r} is not a VAE of its family")


def _default_model(value: str, models: dict[str, ModelEntry]) -> str:
    """SDXL_MODEL may name an entry, or give a hub id / directory (kept as an entry named by that value)."""
    if value in models:
        return value
    for entry in models.values():
        if entry.source == value:
            return entry.name
    # A hub id ("org/name") is its own name; a directory is named "default", since requests may not carry paths.
    name = value if HUB_ID.fullmatch(value) else "default"
    models[name] = ModelEntry(name, value, description="SDXL_MODEL")
    return name


def _read_models_file(
    path: Path, models: dict[str, ModelEntry], vaes: dict[str, ExtraEntry], cns: dict[str, ExtraEntry]
) -> None:
    """Format (JSON, or TOML with the same structure)::

    {"models": {"my-model": {"source": "org/repo or /dir", "description": "...", "vae": "sdxl-vae-fp16-fix",
                             "size": 1024, "steps": 30, "guidance": 5.0, "scheduler": "dpmpp_2m_karras",
                             "max_steps": 50, "family": "sdxl", "variant": "fp16"}},
     "vaes": {"name": {"source": "...", "variant": "fp16"}}, "controlnets": {"name": {"source": "..."}}}

    `variant` names the source's variant files (`*.fp16.safetensors`), used in half precision; omitted: a
    built-in's own, else none. `"none"` (TOML has no null) or null: none.
    """
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    if not isinstance(data, dict) or set(data) - {"models", "vaes", "controlnets"}:
        raise ValueError(f"{path}: expected an object with 'models', 'vaes' and/or 'controlnets'")
    for name, spec in _entries(path, data, "models"):
        base = models.get(name)
        family = _family(path, name, spec.pop("family", base.family if base else SDXL))
        defaults = base.defaults if base is not None else TINY_DEFAULTS if family == TINY_FAMILY else SDXL_DEFAULTS
        entry = ModelEntry(
            name,
            _source(path, name, spec.pop("source", base.source if base else None)),
            family=family,
            description=str(spec.pop("description", base.description if base else "")),
            vae=spec.pop("vae", base.vae if base else None),
            variant=_variant(path, name, spec.pop("variant", base.variant if base else None)),
            defaults=replace(
                defaults,
                size=int(spec.pop("size", defaults.size)),
                steps=int(spec.pop("steps", defaults.steps)),
                guidance=float(spec.pop("guidance", defaults.guidance)),
                refine_steps=int(spec.pop("refine_steps", defaults.refine_steps)),
                scheduler=_scheduler(spec.pop("scheduler", defaults.scheduler)),
                max_steps=spec.pop("max_steps", defaults.max_steps),
            ),
        )
        if spec:
            raise ValueError(f"{path}: model {name!r} has unknown keys {sorted(spec)}")
        models[name] = entry
    for section, target in (("vaes", vaes), ("controlnets", cns)):
        for name, spec in _entries(path, data, section):
            family = _family(path, name, spec.pop("family", SDXL))
            source = _source(path, name, spec.pop("source", None))
            built_in = target.get(name)  # an override keeps a built-in's variant unless it names one
            variant = _variant(path, name, spec.pop("variant")) if "variant" in spec else None
            if built_in is not None and "variant" not in data[section][name]:
                variant = built_in.variant
            target[name] = ExtraEntry(name, source, family, variant=variant)
            if spec:
                raise ValueError(f"{path}: {section} entry {name!r} has unknown keys {sorted(spec)}")


def _scheduler(name: Any) -> str | None:
    from app.engine.models import samplers

    if name is None:
        return None
    try:
        return samplers.canonical(str(name))
    except InvalidRequest as exc:
        raise ValueError(exc.message) from None


def _entries(path: Path, data: dict[str, Any], section: str) -> list[tuple[str, dict[str, Any]]]:
    raw = data.get(section, {})
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: '{section}' must be an object of name -> entry")
    out = []
    for name, spec in raw.items():
        if not _NAME.match(name) or not isinstance(spec, dict):
            raise ValueError(f"{path}: {section} entry {name!r}: names are [A-Za-z0-9._-], entries are objects")
        out.append((name, dict(spec)))
    return out


def _source(path: Path, name: str, source: Any) -> str:
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"{path}: entry {name!r} needs a 'source' (a hub id or a directory)")
    return source.strip()


def _variant(path: Path, name: str, variant: Any) -> str | None:
    if variant is None or variant == "none":
        return None
    if not isinstance(variant, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", variant):
        raise ValueError(f"{path}: entry {name!r}: variant must be a name such as 'fp16', or 'none'")
    return variant


def _family(path: Path, name: str, family: Any) -> str:
    if family not in (SDXL, TINY_FAMILY):
        raise ValueError(f"{path}: entry {name!r}: family must be 'sdxl' or 'tiny'")
    return str(family)


def _scan_loras(directory: Path) -> dict[str, ExtraEntry]:
    """Every *.safetensors file, named by its stem. Names come from the directory listing, never a request."""
    found = {}
    for file in sorted(directory.glob("*.safetensors")):
        if file.is_file() and _NAME.match(file.stem):
            found[file.stem] = ExtraEntry(file.stem, str(directory), None, weight_name=file.name)
    return found
