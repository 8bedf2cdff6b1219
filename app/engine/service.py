"""ImageService, the engine's facade: lifecycle, submitting, waiting and cancelling, finding any replica's jobs.

A job's life: 1. a request's images are decoded (images/inputs.py) and its parameters resolved under the
configured limits into items (jobs/params.py); 2. the job is queued on the scheduler (gpu/scheduler.py: one GPU
owner, batching); 3. the owner runs its batch (gpu/runner.py) and reports back; 4. completion.py stores each image
(images/output.py) and finishes the job. Every job ends succeeded, failed (with a reason) or cancelled. Nothing
here knows about HTTP: the API is typed against protocol.py's `Engine`, which this class implements.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from PIL import Image

from app.config import Settings
from app.engine import versions
from app.engine.completion import Completion
from app.engine.gpu import compiled, loader, warmup
from app.engine.gpu.memory import Memory
from app.engine.gpu.model_cache import free_memory
from app.engine.gpu.runner import Rendered, Runner
from app.engine.gpu.scheduler import Batch, Scheduler
from app.engine.images import inputs
from app.engine.images.encoder import Encoder, default_processes
from app.engine.images.gallery import gallery_page
from app.engine.images.watermark import check_available
from app.engine.jobs import admission, params, records
from app.engine.jobs.heartbeat import Heartbeat
from app.engine.jobs.items import GenerateParams, RefineParams, batch_key
from app.engine.jobs.job import Job, JobFailure, JobRegistry, JobStatus
from app.engine.jobs.leases import Leases
from app.engine.jobs.lookup import JobLookup
from app.engine.jobs.records import JobRecords, View
from app.engine.metrics import Metrics
from app.engine.models import catalog
from app.engine.models.registry import Defaults, Registry, build_registry
from app.engine.protocol import Engine
from app.engine.refiner import RefinerAccess
from app.errors import (
    ModelLoadError,
    NotReady,
    ServiceError,
    StorageFull,
    StorageUnavailable,
    first_line,
)
from app.events.base import EventSink, NoEvents
from app.schemas import GenerateRequest, Img2ImgRequest, InpaintRequest, RefineRequest
from app.storage.base import ImageStore
from app.storage.ids import check_id

logger = logging.getLogger(__name__)


class State(enum.StrEnum):
    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    STOPPING = "stopping"


class JobFailed(ServiceError):
    """A job's terminal failure, raised to a synchronous caller with the job's own status and type."""

    def __init__(self, job: Job):
        assert job.error is not None
        super().__init__(job.error.message, retry_after=job.error.retry_after)
        self.type = job.error.type


class ImageService:
    def __init__(
        self,
        settings: Settings,
        store: ImageStore,
        events: EventSink | None = None,
        on_fatal: Callable[[], None] | None = None,
        *,
        download_path: Callable[[str], str],
    ):
        self.settings = settings
        self.store = store
        self.events: EventSink = events or NoEvents()
        self.metrics = Metrics()
        self.jobs = JobRegistry(settings.job_ttl_s)
        self.records = JobRecords(store, settings.replica)  # so other replicas can answer for this one's jobs
        self.heartbeat = Heartbeat(store, settings.replica, settings.replica_lease_s)  # ...and tell if it is gone
        self.inputs = inputs.Inputs(settings, store)
        leases = Leases(store, settings.replica_lease_s)
        self.lookup = JobLookup(self.jobs, self.records, leases, self.view, self.cancel)
        self.state = State.STARTING
        self.error: str | None = None
        self.device = "unknown"
        processes = settings.encode_processes
        self.encoder = Encoder(default_processes() if processes is None else processes)
        self.completion = Completion(
            settings,
            store,
            self.encoder,
            self.events,
            self.metrics,
            finish=self._finish,
            save=lambda job: self._spawn(self.records.save(job)),
            spawn=self._spawn,
            queue_depth=lambda: self.scheduler.depth,
            free_memory=lambda: self._spawn(self.scheduler.call(free_memory)),
            download_path=download_path,
        )
        self.scheduler = Scheduler(
            self._run_batch,
            max_queue=settings.max_queue,
            max_batch=settings.max_batch,
            max_batch_pixels=settings.batch_max_pixels,
            window_s=settings.batch_window_ms / 1000,
            on_started=self.completion.started,
            on_step=self.completion.step,
            on_done=self.completion.done,
            on_error=self.completion.failed,
        )
        self._refiner = RefinerAccess(self.scheduler)
        self._on_fatal = on_fatal
        self._placement: loader.Placement | None = None
        self.memory: Memory | None = None  # the card as the owner measured it at startup (the loop's copy)
        self.warmup: dict[str, Any] | None = None
        self.registry: Registry | None = None
        self.runner: Runner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # post-processing in flight: awaited at shutdown
        self._expiry: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the GPU owner, load the default model on it and make the refiner's files local (a refiner that
        cannot be is logged and refused per request: generating needs none). /ready answers 503 until this finishes.

        Nobody awaits this task's result (it runs beside the server), so every failure must end in `_fail`:
        an exception escaping here would leave /ready at 503 for ever, with nothing in the log.
        """
        try:
            await self._start()
        except Exception as exc:
            logger.debug("startup failed", exc_info=True)
            self._fail(f"unexpected {type(exc).__name__}: {exc}")

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.scheduler.start()
        self._expiry = asyncio.create_task(self._expire_forever(), name="expire-queued-jobs")
        self.state = State.LOADING
        if problem := await asyncio.to_thread(
            versions.check_at_startup, loader.quiet_library_output
        ):  # imports transformers: off the loop
            return self._fail(problem)
        try:
            self.registry = build_registry(self.settings)
        except (OSError, ValueError) as exc:  # SDXL_MODELS_FILE or SDXL_LORA_DIR unreadable or malformed
            return self._fail(f"the model registry could not be built: {exc}")
        try:
            await self.store.open()  # a missing bucket fails startup like a model that cannot load
            self.heartbeat.start()
            if self.settings.watermark:
                check_available()
            placement = loader.resolve_placement(self.settings)
            self.runner = Runner(self.settings, self.registry, placement, self._on_model, on_compile=self._on_compile)
            encoder = asyncio.create_task(self.encoder.warm(), name="start-encoders")  # beside the load
            self.memory = (await self.scheduler.call(self.runner.load_default)).value
            await encoder
        except ModelLoadError as exc:
            return self._fail(exc.for_operator)  # the one line an operator reads: with the library's own words
        except (StorageFull, StorageUnavailable) as exc:
            return self._fail(exc.message)
        except ImportError as exc:
            return self._fail(f"watermarking needs invisible-watermark ({exc}); or set SDXL_WATERMARK=false")
        self._placement, self.device = placement, placement.device
        await self._refiner.resolve(self.runner)  # its files, not its weights: it loads on first use
        auto = placement.device == "cuda" or self.settings.torch_compile  # compiling is what a warm-up is for
        if self.settings.warmup or (self.settings.warmup is None and auto):
            await self._warm_up()
        if self.state is State.LOADING:
            self.state = State.READY

    async def _warm_up(self) -> None:
        """gpu/warmup.py: a refine (if the refiner loads), an img2img and a generate at the default size, each only
        if admission says it fits. Never fatal: a warm-up that fails is logged, and requests meet the same checks."""
        assert self.registry is not None and self.runner is not None and self.memory is not None
        try:
            first = params.generate_params(
                self.settings,
                GenerateRequest.model_validate({"prompt": "warm-up", "num_inference_steps": 2, "seed": 0}),
                self.registry,
            )[0]
        except ServiceError as exc:  # e.g. a default model whose max_steps is 1
            logger.warning("no warm-up: %s", exc.message)
            return
        picture = Image.new("RGB", (first.width, first.height), "gray")
        d = self.registry.model(None).defaults
        refine = RefineParams("warm-up", None, 0.5, 2, d.guidance, 6.0, 2.5, 0, picture)
        edit = dataclasses.replace(first, kind="img2img", image=picture, strength=0.5)
        # The generate last, so that in swap mode the base's UNet is on the device for the first request.
        calls: list[list[GenerateParams] | list[RefineParams]] = []
        if self.settings.torch_compile:  # the shapes torch compiles a graph of its own for (compiled.py)
            for images, guided in compiled.WARM_UP_SHAPES:
                # Not square: a graph first built for width == height would hold for square images only.
                shape = dataclasses.replace(first, height=first.height + 64, guidance=first.guidance if guided else 1.0)
                try:
                    admission.admit(self.memory, self.registry, shape, images)
                except ServiceError as exc:
                    guidance = "on" if guided else "off"
                    logger.warning(
                        "warm-up without compiling %d image(s), guidance %s: %s", images, guidance, exc.message
                    )
                    continue
                calls.append([dataclasses.replace(shape, seed=shape.seed + i) for i in range(images)])
        for label, item in (("refine", refine), ("img2img", edit), ("generate", first)):
            try:
                admission.admit(self.memory, self.registry, item, 1)
                if item is refine:
                    await self.refiner()
            except ServiceError as exc:
                logger.warning("warm-up without %s: %s", label, exc.message)
                continue
            calls.append([refine] if isinstance(item, RefineParams) else [item])
        try:
            self.warmup = (await self.scheduler.call(warmup.warm_up, self.runner, calls)).value
        except Exception as exc:  # out of memory, a broken pipeline: what the first request would meet
            logger.debug("warm-up failed", exc_info=True)
            logger.error("the startup warm-up failed: %s", first_line(exc))

    def _on_compile(self, part: str, seconds: float) -> None:
        """From the owner thread: torch.compile built a graph of `part` (unet, vae_decoder)."""
        self.metrics.compile.labels(part).observe(seconds)

    def _on_model(self, name: str, role: str, old: str, new: str, seconds: float | None) -> None:
        """From the owner thread: a model moved between disk, CPU memory and the device. Prometheus and the
        event sink are thread-safe."""
        if seconds is not None:
            self.metrics.model_load.labels(role).observe(seconds)
        if new == "device":
            device = self._placement.device if self._placement else "unknown"
            self.events.emit(
                "model.loaded", {"model": name, "role": role, "device": device, "load_seconds": seconds, "from": old}
            )
        elif old == "device" or new == "disk":
            self.events.emit("model.unloaded", {"model": name, "role": role, "device": old, "to": new})

    def _fail(self, message: str) -> None:
        self.state, self.error = State.FAILED, message
        logger.error("startup failed: %s", message)
        if self._on_fatal is not None:
            self._on_fatal()

    def request_shutdown(self) -> None:
        """Thread- and signal-safe: schedule `begin_shutdown` on the service's event loop."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.begin_shutdown)

    def begin_shutdown(self) -> None:
        """SIGTERM: stop taking work at once; queued jobs are answered, the running batch may finish."""
        if self.state is State.STOPPING:
            return
        self.state = State.STOPPING
        error = JobFailure("shutting_down", "the service is shutting down; retry on another replica")
        for job in self.scheduler.close():
            self._finish(job, JobStatus.FAILED, error)
        self.lookup.followers.close()  # streams on other replicas' jobs end, so the server can drain
        logger.info("shutting down: refusing new work, letting the running batch finish")

    async def stop(self) -> None:
        self.begin_shutdown()
        grace = self.settings.shutdown_grace_s
        if not await asyncio.to_thread(self.scheduler.stop, grace):
            logger.warning("the running batch did not finish within %.0fs", grace)
        await asyncio.sleep(0)  # let results the owner just handed over reach the loop
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in [*self._tasks, self._expiry]:
            if task is not None:
                task.cancel()
        for job in self.jobs.active():  # anything still open now can no longer finish
            self._finish(job, JobStatus.FAILED, JobFailure("shutting_down", "the service stopped"))
        if self._tasks:  # the records of those jobs, before the store closes: time for a failing write's retries
            await asyncio.wait(list(self._tasks), timeout=records.RETRIES_S + 2)
        await self.encoder.close()
        await self.heartbeat.stop()  # last: every record above is final, so no reader meets a stopped lease early
        if self.runner is not None:
            for name, role in self.runner.unload_all():
                self.events.emit("model.unloaded", {"model": name, "role": role, "device": self.device, "to": "exit"})

    @property
    def failures_in_a_row(self) -> int:
        return self.completion.failures_in_a_row

    @property
    def ready(self) -> bool:
        return self.state is State.READY and self.failures_in_a_row < self.settings.max_consecutive_failures

    def not_ready_reason(self) -> str:
        if self.state is State.READY:
            return f"{self.failures_in_a_row} pipeline calls failed in a row"
        return f"service is {self.state.value}" + (f": {self.error}" if self.error else "")

    def _ready_registry(self) -> Registry:
        if self.state is not State.READY or self.registry is None:
            raise NotReady(self.not_ready_reason(), retry_after=5)
        return self.registry

    @property
    def base_pipeline(self) -> Any:
        return self.runner.default_pipeline if self.runner else None

    @property
    def refiner_pipeline(self) -> Any:
        return self.runner.refiner if self.runner else None

    # --- submitting ---------------------------------------------------------------------------------
    async def submit_generate(self, req: GenerateRequest) -> Job:
        registry = self._ready_registry()
        control = None
        if req.controlnet is not None:
            control = await self.inputs.upload(req.controlnet.image, "controlnet.image")
        if control is None:
            items = params.generate_params(self.settings, req, registry)
        else:  # resizing the control image to the output size is not work for the event loop
            items = await asyncio.to_thread(params.generate_params, self.settings, req, registry, control)
        job = self._job("generate", items)  # admission first: a request that cannot fit loads nothing
        if req.refine is not None:
            await self.refiner()
        return self._enqueue(job)

    async def submit_edit(self, req: Img2ImgRequest) -> Job:
        """img2img, or inpaint when `req` is an InpaintRequest. Inputs are decoded off the event loop."""
        registry = self._ready_registry()
        image = await self.inputs.image(req.image, req.image_id, "image")
        mask = None
        if isinstance(req, InpaintRequest):
            mask = await self.inputs.image(req.mask, req.mask_id, "mask", mode="L")
        # Off the event loop: the inputs may be resized to the output size.
        items = await asyncio.to_thread(params.edit_params, self.settings, req, registry, image, mask)
        job = self._job(items[0].kind, items)
        job.parent_id = req.image_id
        return self._enqueue(job)

    def _job(self, kind: str, items: list[GenerateParams]) -> Job:
        first = items[0]
        assert self.runner is not None and self.registry is not None and self.memory is not None
        params.check_work(self.settings, items)
        self.runner.cache.refuse_if_failed(first.setup.model)  # at once, not after a wait in the queue
        return Job(
            batch_cap=admission.admit(self.memory, self.registry, first, self.settings.max_batch),
            kind=kind,
            model=first.setup.model,
            items=list(items),
            batch_key=batch_key(first),
            pixels=first.width * first.height,
            steps=first.steps_run,
        )

    async def submit_refine(self, req: RefineRequest) -> Job:
        registry = self._ready_registry()
        defaults = registry.model(None).defaults
        parent_id = check_id(req.id)
        steps = params.check_refine_steps(self.settings, req, defaults)
        source = await self.inputs.stored(parent_id)
        item = params.refine_params(req, steps, defaults, source)
        params.check_work(self.settings, [item])
        assert self.memory is not None
        admission.admit(self.memory, registry, item, 1)  # before the refiner loads: a refusal loads nothing
        await self.refiner()
        job = Job(
            kind="refine",
            model=self.settings.refiner,
            items=[item],
            batch_key=None,
            pixels=source.width * source.height,
            steps=item.steps_run,
            parent_id=parent_id,
        )
        return self._enqueue(job)

    def _enqueue(self, job: Job) -> Job:
        job.instance = self.heartbeat.instance
        self.scheduler.submit(job)  # raises QueueFull / ShuttingDown before the job exists anywhere
        self.jobs.add(job)
        self.metrics.queue_depth.set(self.scheduler.depth)
        self._spawn(self.records.save(job))
        return job

    async def refiner(self) -> Any:
        """The refiner, loaded on first use, once; a recent failure is answered at once (refiner.py)."""
        assert self.runner is not None
        return await self._refiner.get(self.runner)

    @property
    def refiner_loads(self) -> int:
        """How many times a refiner load was attempted (one, unless a load failed)."""
        return self._refiner.loads

    # --- what the API reads: stored PNGs and metrics ---------------------------------------------------
    async def png(self, image_id: str) -> bytes:
        """A stored image's PNG (raises NotFound)."""
        return await self.store.get(image_id)

    async def image_text(self, data: str | bytes, field: str = "image") -> dict[str, str]:
        """An image's text chunks (A1111's `parameters` among them): base64 from a request, or a stored PNG's bytes."""
        return await self.inputs.text(data, field)

    async def list_images(self, limit: int, cursor: str | None = None) -> dict[str, Any]:
        """A page of stored images, newest first, each with its provenance (GET /images)."""
        return await gallery_page(self.store, limit, cursor)

    def active(self) -> list[View]:
        """This replica's jobs that have not ended, oldest first (the loop's own objects: safe to read here)."""
        return [self.view(job) for job in self.jobs.active()]

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered HTTP request, by route template (never the raw path: label cardinality)."""
        self.metrics.requests.labels(route, method, str(status)).inc()
        self.metrics.latency.labels(route).observe(seconds)

    def metrics_text(self) -> bytes:
        self.metrics.queue_depth.set(self.scheduler.depth)
        return self.metrics.render()

    # --- the registry, as GET /models shows it ---------------------------------------------------------
    def model_names(self) -> list[str]:
        registry = self._ready_registry()
        return [registry.default, *(name for name in registry.models if name != registry.default)]

    def model_defaults(self, name: str | None) -> Defaults:
        return self._ready_registry().model(name).defaults

    def models_info(self) -> dict[str, Any]:
        registry = self._ready_registry()
        assert self.runner is not None
        return catalog.models_info(
            registry, self.runner.cache, self.settings, self.device, self.model_names(), self.memory, self.warmup
        )

    # --- waiting and cancelling ---------------------------------------------------------------------
    async def wait(self, job: Job, client_gone: Callable[[], Awaitable[bool]] | None = None) -> Job:
        """Wait for a job to end. A caller that goes away cancels it, queued or running (at the next denoising step):
        nobody would ever learn the ids of the images it stored. Async jobs never get here, so they keep running."""
        job.awaited = True
        gone = False
        while not job.status.terminal:
            await job.changed(timeout=0.25)
            if client_gone is not None and not job.cancel_requested.is_set() and await client_gone():
                gone = True
                self.cancel(job, f"the client disconnected while the job was {job.status.value}")
        # Gone during the job, or while its last image was being stored (the check above runs every 0.25 s): the
        # images it stored, in earlier batches or just now, are removed rather than kept where no one can find them.
        if client_gone is not None and (gone or await client_gone()) and await self.completion.disown(job):
            self._spawn(self.records.save(job))
        if job.status is not JobStatus.SUCCEEDED:
            raise JobFailed(job)
        return job

    def cancel(self, job: Job, reason: str = "cancelled by request") -> Job:
        if job.status.terminal:
            return job
        job.cancel_requested.set()
        if self.scheduler.remove(job) and job.in_call == 0:
            # Nothing of it is running (never started, or cancelled between two of its batches): nobody else
            # would end it, so it ends here. Images it already stored stay stored.
            self._finish(job, JobStatus.CANCELLED, JobFailure("cancelled", reason))
        # else: it is running; the owner stops at the next step (or drops its images) and finishes it.
        return job

    # --- any replica's jobs --------------------------------------------------------------------------
    def view(self, job: Job) -> View:
        return self.records.view(job, self.scheduler.position(job))

    async def find_job(self, job_id: str) -> View:
        return await self.lookup.find(job_id)

    async def cancel_job(self, job_id: str) -> View:
        return await self.lookup.cancel(job_id)

    async def watch_job(self, job_id: str) -> AsyncIterator[View | None]:
        return await self.lookup.watch(job_id)

    def _finish(self, job: Job, status: JobStatus, error: JobFailure | None = None) -> None:
        if not job.finish(status, error if error is None else job.naming_stored(error)):
            return
        self.scheduler.remove(job)  # its images still queued (a call of it failed): nobody wants them now
        self.scheduler.job_finished(job)
        self.completion.release_if_done(job)
        self._spawn(self.records.save(job))
        if error is not None:
            self.metrics.failures.labels(error.type).inc()
        self.metrics.queue_depth.set(self.scheduler.depth)

    async def _expire_forever(self) -> None:
        error = JobFailure(
            "queue_timeout", f"waited more than {self.settings.queue_timeout_s:g}s in the queue; not run"
        )
        while True:
            await asyncio.sleep(0.25)
            for job in self.scheduler.expire(self.settings.queue_timeout_s):
                self._finish(job, JobStatus.FAILED, error)

    # --- the owner thread runs this -----------------------------------------------------------------
    def _run_batch(self, batch: Batch, on_step: Callable[[], None]) -> list[Rendered]:
        assert self.runner is not None
        return self.runner.run(batch.params, on_step)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


if TYPE_CHECKING:  # the facade is what the API's protocol says it is (mypy checks this line)
    _implements: type[Engine] = ImageService
