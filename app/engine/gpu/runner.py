"""Everything the GPU owner's thread holds and runs: the pipeline cache, the refiner, per-request VAEs,
ControlNets and LoRAs. Every method here runs on that thread (through the scheduler), so loads are
serialized with generation and no state here is ever touched by two calls at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from PIL import Image

from app.config import Settings
from app.engine.gpu import compiled, fetch, loader, memory, pipelines, residency
from app.engine.gpu.adapters import apply_loras
from app.engine.gpu.components import Components
from app.engine.gpu.memory import Call, Memory
from app.engine.gpu.model_cache import PipelineCache, Slot, modules_bytes, pipeline_bytes
from app.engine.gpu.pipelines import with_components
from app.engine.jobs import admission
from app.engine.jobs.items import GenerateParams, RefineParams
from app.engine.models import samplers
from app.engine.models.registry import ExtraEntry, ModelEntry, Registry
from app.errors import InvalidRequest

logger = logging.getLogger(__name__)

# Called on every model placement change: (name, role, old location, new location, load seconds or None).
OnModel = Callable[[str, str, str, str, float | None], None]


@dataclass(frozen=True)
class Rendered:
    """One image from a pipeline call, with what its provenance needs from the owner's state: read here, on the
    owner's thread, so that nothing on the event loop reads state the owner mutates."""

    image: Image.Image
    scheduler: str  # the sampler asked for, else the class of the pipeline's own scheduler


class Runner:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        placement: loader.Placement,
        on_model: OnModel,
        on_compile: Callable[[str, float], None] | None = None,
    ):
        self.settings, self.registry, self.placement = settings, registry, placement
        self._on_model = on_model
        # SDXL_TORCH_COMPILE: the default model only, the one every request without `model` runs (compiled.py).
        self.compiler = compiled.Compiler(on_compile) if settings.torch_compile else None
        # Models load onto the CPU first, so the cache can make room on the device before the copy.
        self._staging = loader.Placement("cpu", placement.dtype_name)
        self.cache = PipelineCache(
            list(registry.models.values()),
            registry.default,
            self._load_model,
            placement.device,
            max_models=settings.model_cache_max_models,
            max_bytes=settings.model_cache_max_bytes,
            cpu_tier=settings.model_cpu_tier,
            on_change=self._placed,
        )
        self._load_seconds: dict[str, float] = {}
        self.scheduler_names: dict[str, str] = {}  # model -> its own scheduler's class, for provenance
        # What a request asks for may come only from local files unless the operator allows downloads: a request
        # must not be able to make this replica fetch gigabytes while every queued job waits.
        self._local_only = not settings.download_models
        self.vaes = Components(lambda e: loader.load_vae(e, settings, placement, self._local_only), keep=2)
        self.controlnets = Components(
            lambda e: loader.load_controlnet(e, settings, placement, self._local_only), keep=2
        )
        self.refiner: Any = None
        float16 = placement.dtype_name == "float16"
        self.memory = Memory(None, memory.RESIDENT, memory.DTYPE_BYTES[placement.dtype_name], 0, False, float16=float16)
        self.parking = residency.Parking(placement.device)
        self._refiner_bytes = 0  # its own UNet: the encoder and VAE are the base's

    # --- loading -------------------------------------------------------------------------------------
    def _load_model(self, entry: ModelEntry) -> Any:
        started = time.perf_counter()
        local_only = self._local_only and entry.name != self.registry.default  # the default loads at startup
        vae = None
        if entry.vae is not None:
            vae = loader.load_vae(self.registry.vaes[entry.vae], self.settings, self._staging, local_only)
        pipe = loader.load_model(entry, self.settings, self._staging, vae=vae, local_only=local_only)
        if self.compiler is not None and entry.name == self.registry.default:
            self.compiler.compile(pipe, decoder=self.placement.device != "cpu")  # compiled.py: why not on CPU
        self._load_seconds[entry.name] = time.perf_counter() - started
        self.scheduler_names[entry.name] = type(pipe.scheduler).__name__
        return pipe

    def _placed(self, name: str, old: str, new: str) -> None:
        seconds = self._load_seconds.pop(name, None) if new == "device" else None
        self._on_model(name, "model", old, new, seconds)

    def load_default(self) -> Memory:
        """Measure the card, load the default model, and choose how base and refiner share the card."""
        budget = residency.measure_budget(self.settings.gpu_memory_gb, self.placement.device)
        slot = self.cache.get(self.registry.default)
        b = self.memory.dtype_bytes
        upcast = bool(getattr(slot.pipe.vae.config, "force_upcast", False)) and self.memory.float16
        d = slot.entry.defaults
        call = Call(d.size, d.size, 1, d.guidance > 1, b, upcast)
        fp = memory.FOOTPRINTS[slot.entry.family]
        mode, reason = residency.choose_mode(self.settings.memory_mode, budget, slot.bytes or 0, fp, call)
        self.memory = Memory(budget, mode, b, slot.bytes or 0, upcast, reason, self.memory.float16)
        logger.info("memory mode %s: %s", mode, reason)
        return self.memory

    @property
    def default_pipeline(self) -> Any:
        return self.cache.slots[self.registry.default].pipe

    def resolve_refiner(self) -> None:
        """At startup, after the default model: the refiner's files onto this machine, not into memory."""
        fetch.resolve_refiner(self.registry.refiner, self.settings, self.placement.dtype_name)

    def load_refiner(self) -> Any:
        """The refiner borrows the default model's text_encoder_2 and VAE (the same objects)."""
        if self.refiner is None:
            started = time.perf_counter()
            fp = self._footprint(self.registry.default)
            # It loads beside the base; on a card where both do not fit (SWAP) the base's UNet is parked first.
            need = fp.refiner_unet_params * self.memory.dtype_bytes
            self._make_room(need, keep={self.registry.default}, uses_refiner=True, refine=True)
            self.refiner = loader.load_refiner(
                self.registry.refiner, self.settings, self.placement, self.default_pipeline
            )
            self._refiner_bytes = modules_bytes(self.refiner.unet)
            self._on_model(self.registry.refiner.name, "refiner", "disk", "device", time.perf_counter() - started)
        return self.refiner

    # --- running -------------------------------------------------------------------------------------
    def run(self, items: list[GenerateParams] | list[RefineParams], on_step: Callable[[], None]) -> list[Rendered]:
        """One pipeline call for a batch: the one place that dispatches on what the items are.

        A call that fails puts every shared module back in its dtype: diffusers upcasts a `force_upcast` VAE to
        float32 for decoding and casts it back without try/finally, so one out-of-memory error inside the decode
        would otherwise leave the shared VAE in float32 and every later call failing with a dtype error.
        """
        try:
            return self._run(items, on_step)
        except BaseException:
            try:
                self.restore_dtypes()
            except Exception:  # never in place of the call's own error (a cancel must stay a cancel)
                logger.exception("restoring dtypes after a failed call failed")
            raise

    def restore_dtypes(self) -> list[str]:
        """Cast back any loaded module that is no longer in the placement's dtype; returns what was restored."""
        import torch

        wanted = self.placement.dtype
        pipes = [(f"model {name!r}", pipe) for name, pipe in self.cache.loaded()]
        if self.refiner is not None:
            pipes.append(("the refiner", self.refiner))
        modules = [(f"{label}: {part}", module) for label, pipe in pipes for part, module in pipe.components.items()]
        modules += [(f"VAE {name!r}", m) for name, m in self.vaes.loaded()]
        modules += [(f"ControlNet {name!r}", m) for name, m in self.controlnets.loaded()]
        restored = []
        for label, module in modules:
            if not isinstance(module, torch.nn.Module):
                continue
            # Every tensor, not `module.dtype` (one parameter): a cast that stopped halfway leaves a mixture.
            tensors = [*module.parameters(), *module.buffers()]
            if any(t.is_floating_point() and t.dtype != wanted for t in tensors):
                module.to(dtype=wanted)
                restored.append(label)
        if restored:
            logger.warning("a failed call left %s in another dtype; restored to %s", ", ".join(restored), wanted)
        return restored

    def _run(self, items: list[GenerateParams] | list[RefineParams], on_step: Callable[[], None]) -> list[Rendered]:
        first = items[0]
        if isinstance(first, RefineParams):  # a refine always runs alone
            return [Rendered(self.refine(first, on_step), type(self.refiner.scheduler).__name__)]
        batch = cast(list[GenerateParams], items)
        images = self.generate(batch, on_step)
        # A named scheduler by its name; otherwise the class of the model's own (recorded when it was loaded).
        return [
            Rendered(image, p.setup.scheduler or self.scheduler_names.get(p.setup.model, "default"))
            for image, p in zip(images, batch, strict=True)
        ]

    def generate(self, batch: list[GenerateParams], on_step: Callable[[], None]) -> list[Image.Image]:
        p = batch[0]
        entry = self.registry.model(p.setup.model)
        vae_entry = self.registry.vae(p.setup.vae, entry) if p.setup.vae is not None else None
        cn_entry = self.registry.controlnet(p.control.name, entry) if p.control is not None else None
        ensemble = p.high_noise_frac is not None
        if ensemble and (self.refiner is None or entry.name != self.registry.default):
            raise InvalidRequest("ensemble refine needs the default model and its refiner", field="refine")
        keep = {entry.name, *(e.name for e in (vae_entry, cn_entry) if e is not None)}
        # SWAP: an ensemble's first half needs only the base's UNet; the refiner's comes in half-way through.
        uses_refiner = ensemble and self.memory.mode == memory.RESIDENT
        need = self._incoming(entry, vae_entry, cn_entry) + self._activations(entry, p, len(batch))
        self._make_room(need, keep=keep, uses_refiner=uses_refiner)
        slot = self.cache.get(entry.name)
        if entry.name == self.registry.default:
            self.parking.unpark("base", self.default_pipeline.unet)
        loras = [
            (self.registry.lora(name, entry, f"loras[{i}].name"), scale)
            for i, (name, scale) in enumerate(p.setup.loras)
        ]
        changed = False
        is_compiled = compiled.is_compiled(slot.pipe)
        try:
            changed = apply_loras(slot.pipe, loras, self._resolve, unload_idle=is_compiled)
        finally:  # a refused LoRA may have deleted adapters too
            if loras or changed:
                self.cache.resize(entry.name, pipeline_bytes(slot.pipe))
        if changed:  # new adapter weights: what else must leave for the call to fit
            self._make_room(self._activations(entry, p, len(batch)), keep=keep, uses_refiner=uses_refiner)
        pipe = self._pipeline_for(slot, p)
        overrides: dict[str, Any] = {}
        if p.setup.scheduler is not None:
            overrides["scheduler"] = samplers.build(p.setup.scheduler, pipe.scheduler.config)
        if vae_entry is not None:
            overrides["vae"] = self.vaes.get(vae_entry)
        self._set_decode(entry, p, len(batch), overrides.get("vae", pipe.vae))
        refiner, switch = None, None
        if ensemble:
            # The refiner finishes the same picture: the same VAE, and the same kind of scheduler from its own config.
            refiner_overrides = {k: v for k, v in overrides.items() if k == "vae"}
            if p.setup.scheduler is not None:
                refiner_overrides["scheduler"] = samplers.build(p.setup.scheduler, self.refiner.scheduler.config)
            refiner = with_components(self.refiner, **refiner_overrides)
            if "refiner" in self.parking.parked:  # SWAP: the base's UNet makes way half-way through the call
                switch = partial(self._to_refiner_unet, self._activations(entry, p, len(batch)))
        # Through the module, so tests can inject faults (OOM, a broken pipeline) at the call itself.
        with compiled.eager(active=bool(loras) and is_compiled):  # PEFT's layers are not what was compiled
            return pipelines.run_generate(with_components(pipe, **overrides), batch, on_step, refiner, switch)

    def refine(self, p: RefineParams, on_step: Callable[[], None]) -> Image.Image:
        entry = self.registry.model(None)
        need = self._activations(entry, p, 1)
        parked = self._refiner_bytes if "refiner" in self.parking.parked else 0
        self._make_room(need + parked, keep={entry.name}, uses_refiner=True, refine=True)
        self._to_refiner_unet(need)
        # The refiner shares the default model's text_encoder_2, where a LoRA may have text-encoder layers.
        unload = compiled.is_compiled(self.default_pipeline)
        if apply_loras(self.default_pipeline, [], self._resolve, unload_idle=unload):
            self.cache.resize(self.registry.default, pipeline_bytes(self.default_pipeline))
        self._set_decode(entry, p, 1, self.refiner.vae)
        return pipelines.run_refiner(self.refiner, p, on_step)

    # --- memory: what stays on the device (see residency.py) -------------------------------------------
    def _footprint(self, model: str) -> memory.Footprint:
        return memory.FOOTPRINTS[self.registry.models[model].family]

    def _call(self, entry: ModelEntry, p: GenerateParams | RefineParams, images: int, vae: Any = None) -> Call:
        upcast = None if vae is None else bool(getattr(vae.config, "force_upcast", False))
        return admission.call_of(self.memory, p, images, upcast)

    def _activations(self, entry: ModelEntry, p: GenerateParams | RefineParams, images: int) -> int:
        fp, call = self._footprint(entry.name), self._call(entry, p, images)
        return memory.activations(fp, call, memory.plan_decode(fp, call, self._room()))

    def _room(self) -> int | None:
        budget = self.memory.budget
        return None if budget is None else budget - self.resident_bytes()

    def _set_decode(self, entry: ModelEntry, p: GenerateParams | RefineParams, images: int, vae: Any) -> None:
        fp, call = self._footprint(entry.name), self._call(entry, p, images, vae)
        residency.set_decode(vae, fp, memory.plan_decode(fp, call, self._room()))

    def _incoming(self, entry: ModelEntry, vae: ExtraEntry | None, controlnet: ExtraEntry | None) -> int:
        """Estimated bytes of what the call uses that is not on the device yet."""
        fp, b = self._footprint(entry.name), self.memory.dtype_bytes
        total = 0 if self.cache.slots[entry.name].location == "device" else fp.weights(b)
        if vae is not None and not self.vaes.has(vae.name):
            total += fp.vae_params * b
        if controlnet is not None and not self.controlnets.has(controlnet.name):
            total += fp.controlnet_params * b
        if "base" in self.parking.parked and entry.name == self.registry.default:
            total += self._base_unet_bytes()
        return total

    def resident_bytes(self) -> int:
        total = self.cache.device_bytes + self.vaes.bytes + self.controlnets.bytes
        if self.refiner is not None and "refiner" not in self.parking.parked:
            total += self._refiner_bytes
        if "base" in self.parking.parked:
            total -= self._base_unet_bytes()
        return total

    def _base_unet_bytes(self) -> int:
        return modules_bytes(self.default_pipeline.unet)

    def _make_room(self, need: int, keep: set[str], uses_refiner: bool, refine: bool = False) -> None:
        victims: list[tuple[str, Callable[[], None]]] = []
        for label, parts in (("ControlNet", self.controlnets), ("VAE", self.vaes)):
            victims += [(f"{label} {n!r}", partial(parts.drop, n)) for n, _ in parts.loaded() if n not in keep]
        victims += [(f"model {n!r}", partial(self.cache.evict, n)) for n in self.cache.on_device() if n not in keep]
        if self.refiner is not None and not uses_refiner:
            victims.append(("the refiner's UNet (parked)", lambda: self.parking.park("refiner", self.refiner.unet)))
        if refine:
            victims.append(("the base's UNet (parked)", lambda: self.parking.park("base", self.default_pipeline.unet)))
        residency.make_room(self.memory.budget, need, self.resident_bytes, victims)

    def _to_refiner_unet(self, need: int) -> None:
        """The refiner's UNet onto the device, the base's parked first if both and the call's `need` (activations)
        do not fit (SWAP)."""
        if "refiner" not in self.parking.parked:
            return
        room = self._room()
        if room is not None and room < self._refiner_bytes + need:
            self.parking.park("base", self.default_pipeline.unet)
        self.parking.unpark("refiner", self.refiner.unet)

    def _resolve(self, source: str) -> str:
        return loader.resolve_source(source, self.settings)

    def _pipeline_for(self, slot: Slot, p: GenerateParams) -> Any:
        """The model's pipeline for this kind of call, sharing its modules (`from_pipe`: no new weights)."""
        import diffusers

        if p.control is not None:
            controlnet = self.controlnets.get(self.registry.controlnet(p.control.name, slot.entry))
            # Not cached: it holds the ControlNet, which must go when `self.controlnets` drops it.
            view = diffusers.StableDiffusionXLControlNetPipeline.from_pipe(
                slot.pipe, controlnet=controlnet, add_watermarker=False, dtype=self.placement.dtype
            )
        elif p.kind == "generate":
            return slot.pipe
        else:
            view = slot.views.get(p.kind)
            if view is None:
                cls = {
                    "img2img": diffusers.StableDiffusionXLImg2ImgPipeline,
                    "inpaint": diffusers.StableDiffusionXLInpaintPipeline,
                }[p.kind]
                # from_pipe would otherwise switch diffusers' own watermarker back on: we mark the final image.
                # And without a dtype it casts every *shared* module to float32 (diffusers 0.42, issue #12754):
                # in half precision the base pipeline would double in size and refine would fail.
                view = slot.views[p.kind] = cls.from_pipe(slot.pipe, add_watermarker=False, dtype=self.placement.dtype)
        view.set_progress_bar_config(disable=True)
        return view

    def unload_all(self) -> list[tuple[str, str]]:
        loaded = [(name, "model") for name, _ in self.cache.loaded()]
        if self.refiner is not None:
            loaded.append((self.settings.refiner, "refiner"))
        return loaded
