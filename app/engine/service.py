"""ImageService: turns validated requests into stored PNGs.

Flow for each request: 1. resolve defaults and configured limits, 2. run the pipeline on the GPU owner,
3. watermark + encode off the owner's thread, 4. store atomically. Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import enum
import io
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from app.config import TINY, Settings
from app.engine import loader, pipelines
from app.engine.metadata import Provenance, encode_png
from app.engine.watermark import apply_watermark, check_available
from app.engine.worker import GpuWorker
from app.errors import InvalidRequest, ModelLoadError, NotReady
from app.schemas import MAX_SEED, GenerateRequest, RefineRequest
from app.storage.base import ImageStore
from app.storage.ids import check_id, new_id

logger = logging.getLogger(__name__)


class State(str, enum.Enum):
    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    STOPPING = "stopping"


@dataclass(frozen=True)
class ImageResult:
    id: str
    seed: int
    width: int
    height: int
    model: str
    png: bytes
    parent_id: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


class ImageService:
    def __init__(
        self,
        settings: Settings,
        store: ImageStore,
        worker: GpuWorker,
        on_fatal: Callable[[], None] | None = None,
    ):
        self.settings = settings
        self.store = store
        self.worker = worker
        self.state = State.STARTING
        self.error: str | None = None
        self.device = "unknown"
        self.refiner_loads = 0  # how many times the refiner was actually loaded (should stay at most 1)
        self._on_fatal = on_fatal
        self._placement: loader.Placement | None = None
        self._base: Any = None
        self._refiner: Any = None
        self._refiner_lock = asyncio.Lock()
        self._defaults: pipelines.ModelDefaults | None = None

    # --- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the base pipeline on the GPU owner. /ready answers 503 until this finishes."""
        self.state = State.LOADING
        try:
            if self.settings.watermark:
                check_available()
            placement = loader.resolve_placement(self.settings)
            timed = await self.worker.run(loader.load_base, self.settings, placement)
        except ModelLoadError as exc:
            self._fail(exc.message)
            return
        except ImportError as exc:
            self._fail(f"watermarking needs the invisible-watermark package ({exc}); or set SDXL_WATERMARK=false")
            return
        self._placement, self._base, self.device = placement, timed.value, placement.device
        self._defaults = pipelines.model_defaults(self._base, tiny=self.settings.model == TINY)
        self.state = State.READY

    def _fail(self, message: str) -> None:
        self.state, self.error = State.FAILED, message
        logger.error("startup failed: %s", message)
        if self._on_fatal is not None:
            self._on_fatal()

    def _ready(self) -> pipelines.ModelDefaults:
        if self.state is not State.READY or self._defaults is None:
            detail = f": {self.error}" if self.error else ""
            raise NotReady(f"service is {self.state.value}{detail}", headers={"Retry-After": "5"})
        return self._defaults

    @property
    def defaults(self) -> pipelines.ModelDefaults | None:
        return self._defaults

    @property
    def base_pipeline(self) -> Any:
        return self._base

    @property
    def refiner_pipeline(self) -> Any:
        return self._refiner

    # --- generate ---------------------------------------------------------------------------------
    async def generate(self, req: GenerateRequest) -> ImageResult:
        params = self._resolve_generate(req, self._ready())
        timed = await self.worker.run(pipelines.run_base, self._base, params)
        provenance = Provenance(
            kind="generate",
            model=self.settings.model,
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            prompt_2=params.prompt_2,
            negative_prompt_2=params.negative_prompt_2,
            seed=params.seed,
            steps=params.steps,
            guidance_scale=params.guidance,
            width=params.width,
            height=params.height,
            scheduler=self._ready().scheduler,
            watermark=self.settings.watermark,
        )
        return await self._finish(timed.value, provenance, {"queue": timed.queue_s, "inference": timed.run_s})

    def _resolve_generate(self, req: GenerateRequest, defaults: pipelines.ModelDefaults) -> pipelines.GenerateParams:
        width = req.width or defaults.size
        height = req.height or defaults.size
        self._check_size(width, height)
        return pipelines.GenerateParams(
            prompt=req.prompt,
            negative_prompt=req.negative_prompt,
            prompt_2=req.prompt_2,
            negative_prompt_2=req.negative_prompt_2,
            width=width,
            height=height,
            steps=self._check_steps(req.num_inference_steps or defaults.steps),
            guidance=defaults.guidance if req.guidance_scale is None else req.guidance_scale,
            seed=_seed(req.seed),
        )

    def _check_size(self, width: int, height: int) -> None:
        limit = self.settings.max_side
        for name, value in (("width", width), ("height", height)):
            if value > limit:
                raise InvalidRequest(f"{name} must be a multiple of 8 between 256 and {limit}, got {value}", field=name)
        if width * height > self.settings.max_pixels:
            raise InvalidRequest(
                f"width*height must be at most {self.settings.max_pixels} pixels, got {width}x{height}",
                field="width",
                details=[{"field": "width", "message": "too large"}, {"field": "height", "message": "too large"}],
            )

    def _check_steps(self, steps: int) -> int:
        if steps > self.settings.max_steps:
            raise InvalidRequest(
                f"num_inference_steps must be between 1 and {self.settings.max_steps}, got {steps}",
                field="num_inference_steps",
            )
        return steps

    # --- refine -----------------------------------------------------------------------------------
    async def refine(self, req: RefineRequest) -> ImageResult:
        defaults = self._ready()
        parent_id = check_id(req.id)
        steps = self._check_steps(req.num_inference_steps or defaults.refine_steps)
        if int(steps * req.strength) < 1:
            # diffusers runs int(steps * strength) steps and crashes on zero.
            raise InvalidRequest(
                f"num_inference_steps * strength must be at least 1, got {steps} * {req.strength:g}; "
                "raise num_inference_steps or strength",
                field="strength",
                details=[
                    {"field": "num_inference_steps", "message": f"{steps} is too few for this strength"},
                    {"field": "strength", "message": f"{req.strength:g} is too low for this many steps"},
                ],
            )
        source = await asyncio.to_thread(_decode_png, await self.store.get(parent_id))
        params = pipelines.RefineParams(
            prompt=req.prompt,
            negative_prompt=req.negative_prompt,
            strength=req.strength,
            steps=steps,
            guidance=defaults.guidance if req.guidance_scale is None else req.guidance_scale,
            aesthetic_score=req.aesthetic_score,
            negative_aesthetic_score=req.negative_aesthetic_score,
            seed=_seed(req.seed),
        )
        refiner = await self.refiner()
        timed = await self.worker.run(pipelines.run_refiner, refiner, params, source)
        provenance = Provenance(
            kind="refine",
            model=self.settings.refiner,
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            prompt_2=None,
            negative_prompt_2=None,
            seed=params.seed,
            steps=params.steps,
            guidance_scale=params.guidance,
            width=source.width,
            height=source.height,
            scheduler=type(refiner.scheduler).__name__,
            watermark=self.settings.watermark,
            strength=params.strength,
            parent_id=parent_id,
        )
        return await self._finish(timed.value, provenance, {"queue": timed.queue_s, "inference": timed.run_s})

    async def refiner(self) -> Any:
        """Load the refiner on first use, exactly once, however many requests ask at the same time.

        The lock is held across the load (not only the check), so concurrent first callers wait for the one
        load instead of starting their own; if the load fails the lock is released and the next call retries.
        """
        if self._refiner is not None:
            return self._refiner
        async with self._refiner_lock:
            if self._refiner is None:
                self.refiner_loads += 1
                timed = await self.worker.run(loader.load_refiner, self.settings, self._placement, self._base)
                self._refiner = timed.value
        return self._refiner

    # --- shared tail ------------------------------------------------------------------------------
    async def _finish(self, image: Image.Image, provenance: Provenance, seconds: dict[str, float]) -> ImageResult:
        started = time.perf_counter()
        png = await asyncio.to_thread(self._encode, image, provenance)
        encoded = time.perf_counter()
        image_id = new_id()
        await self.store.put(image_id, png)
        seconds = {**seconds, "encode": encoded - started, "store": time.perf_counter() - encoded}
        return ImageResult(
            id=image_id,
            seed=provenance.seed,
            width=image.width,
            height=image.height,
            model=provenance.model,
            png=png,
            parent_id=provenance.parent_id,
            timings={f"{k}_ms": round(v * 1000, 2) for k, v in seconds.items()},
        )

    def _encode(self, image: Image.Image, provenance: Provenance) -> bytes:
        if self.settings.watermark:
            image = apply_watermark(image)
        return encode_png(image, provenance)


def _seed(seed: int | None) -> int:
    return secrets.randbelow(MAX_SEED + 1) if seed is None else seed


def _decode_png(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")
