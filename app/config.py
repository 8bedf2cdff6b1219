"""Every setting of the service, typed and validated once at startup.

The service receives a `Settings` instance; nothing else in it reads the environment. (The client commands of
the CLI are not the service: `app/cli/connection.py` reads `SDXL_URL`, `SDXL_API_KEY` and `GENERATION_AUTH_KEY`
to find a running server.) Tests build their own (`Settings(model="tiny", ...)`), so no module-level settings
object exists.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
SDXL_REFINER = "stabilityai/stable-diffusion-xl-refiner-1.0"
TINY = "tiny"
TINY_B = "tiny-b"  # a second built-in tiny model, so that switching models can be tested offline
TINY_MODELS = (TINY, TINY_B)

# Hard ceilings of the API contract. Settings may lower them, never raise them, so the limits that
# /docs shows are always true upper bounds.
MAX_SIDE = 2048
MAX_STEPS = 100


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "sdxl-serve"


class Settings(BaseSettings):
    # hide_input_in_errors: a model-level error would otherwise print every input, secrets (S3 key, API key) too.
    model_config = SettingsConfigDict(
        env_prefix="SDXL_", populate_by_name=True, extra="ignore", hide_input_in_errors=True
    )

    # --- models -------------------------------------------------------------------------------
    model: str = Field(
        "sdxl-base",
        description="The default (pinned) model: a registry name (sdxl-base, sdxl-turbo, sdxl-anime, "
        "sdxl-anime-legacy, tiny, tiny-b, or one from SDXL_MODELS_FILE), a hub id or a local directory.",
    )
    models_file: Path | None = Field(
        None, description="JSON or TOML file adding models, VAEs and ControlNets to the registry."
    )
    lora_dir: Path | None = Field(None, description="Directory of LoRA *.safetensors files, usable by name.")
    download_models: bool = Field(
        False,
        description="Let a request make the service download a registry model, VAE or ControlNet from the hub. "
        "Off: only the default model (at startup) is fetched; others must be in the hub cache or a directory.",
    )
    model_cache_max_models: int = Field(
        2, ge=1, le=64, description="Pipelines kept on the device, the pinned default included."
    )
    model_cache_max_bytes: int = Field(
        0, ge=0, description="Bytes of pipelines kept on the device (the pinned default is never evicted). 0: no cap."
    )
    model_cpu_tier: int = Field(
        0, ge=0, le=64, description="Evicted pipelines kept in CPU memory, so switching back skips the disk. 0: off."
    )
    refiner_model: str | None = Field(
        None,
        description="Refiner: a hub id or a local directory. Unset: the SDXL refiner, or the tiny refiner "
        "when the base is 'tiny'.",
    )
    device: Literal["auto", "cuda", "mps", "cpu"] = Field("auto", description="auto: cuda, then mps, then cpu.")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto", description="auto: float16 on cuda/mps, float32 on cpu (fp16 on CPU is ~10x slower)."
    )
    gpu_memory_gb: float | None = Field(
        None,
        gt=0,
        description="Device memory the service may use, in GiB. Unset: 95% of what CUDA reports free at startup; "
        "on CPU or MPS none (nothing is refused for memory). Lower it to share a card; set it on CPU to model a card.",
    )
    memory_mode: Literal["auto", "resident", "swap"] = Field(
        "auto",
        description="auto: base and refiner stay on the device when they and one default-size call fit the card, "
        "else their UNets take turns (swap). The log says which was chosen and why.",
    )
    warmup: bool | None = Field(
        None,
        description="At startup, run generate, img2img and refine once at the default size and report the peak "
        "memory (log, /models). Unset: on CUDA, or with SDXL_TORCH_COMPILE.",
    )
    torch_compile: bool = Field(
        False,
        description="torch.compile the default model's UNet (its transformer blocks, regionally) and VAE decoder, "
        "with dynamic shapes. The startup warm-up then compiles every shape a request can need, so no request "
        "waits for it (tens of seconds on a GPU, minutes on CPU). Calls with a LoRA run uncompiled.",
    )
    variant: str | None = Field(
        None,
        description="Unset: each registry entry's own weights variant (fp16 files for the SDXL built-ins), used "
        "only in float16/bfloat16. A name (e.g. 'fp16') forces that variant for every model, VAE, ControlNet and "
        "the refiner, in any dtype; 'none': never a variant. Files without the variant fall back to the regular "
        "ones. Ignored for the tiny models.",
    )
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="Where the tiny model is built.")
    watermark: bool = Field(True, description="Embed SDXL's invisible watermark in every image.")
    torch_threads: int | None = Field(
        None, ge=1, le=256, description="CPU threads for torch (CPU serving); unset: torch's default."
    )

    # --- limits -------------------------------------------------------------------------------
    max_side: int = Field(MAX_SIDE, ge=256, le=MAX_SIDE, description="Largest width or height accepted.")
    max_pixels: int = Field(2048 * 2048, ge=256 * 256, description="Largest width*height accepted (memory guard).")
    max_steps: int = Field(MAX_STEPS, ge=1, le=MAX_STEPS, description="Most inference steps accepted.")
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest request body accepted; more: 413 before parsing (no field needs more).",
    )
    max_upload_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Largest body of a request that carries images (/img2img, /inpaint, /generate with a "
        "ControlNet image); more: 413 before parsing.",
    )
    max_large_bodies: int = Field(
        4,
        ge=1,
        le=256,
        description="Requests with a body over SDXL_MAX_BODY_BYTES (images) handled at once; more wait up to "
        "SDXL_QUEUE_TIMEOUT_S, then 503. Each holds about 6x its body while it is in the service (measured).",
    )
    max_work_mpx_steps: float = Field(
        256.0,
        gt=0,
        description="Most work one request may ask for, in megapixel-steps: width x height x denoising steps run x "
        "images / 10^6 (256: 1024x1024, 60 steps, 4 images; or 8 images at 30). A request over it holds the only "
        "GPU worker for everyone else's queue timeout: 422.",
    )
    min_upload_side: int = Field(64, ge=8, le=1024, description="Smallest width or height of an uploaded image.")

    # --- scheduling ----------------------------------------------------------------------------
    max_queue: int = Field(32, ge=1, le=10_000, description="Images that may wait for the GPU; more: 429.")
    max_batch: int = Field(8, ge=1, le=64, description="Most images in one pipeline call (1: batching off).")
    batch_max_pixels: int = Field(
        8 * 256 * 256, ge=256 * 256, description="Pixel budget of one batch (on CPU, batching loses at 512²)."
    )
    batch_window_ms: float = Field(
        50.0,
        ge=0,
        le=1000,
        description="Most the GPU owner waits for clients whose images are being delivered, while the batch it "
        "holds is smaller than theirs (so closed-loop clients settle into equal groups); for a client just answered, "
        "at most 2.5% of the last batch; a lone request on an idle GPU never waits.",
    )
    queue_timeout_s: float = Field(
        45.0, gt=0, le=3600, description="A job waiting longer is answered 503 and never run (dstack's proxy: 60 s)."
    )
    job_ttl_s: float = Field(3600.0, ge=0, description="How long finished jobs stay readable at /jobs/{id}.")
    replica_lease_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="Each serving process renews a lease in the store every third of this; an unfinished job whose "
        "process has not renewed it for this long (plus 2 s for clock skew) reads failed (replica_lost) everywhere.",
    )
    shutdown_grace_s: float = Field(30.0, ge=0, le=600, description="How long SIGTERM waits for the running job.")
    encode_processes: int | None = Field(
        None,
        ge=0,
        le=64,
        description="Worker processes for the watermark and PNG encoding, so that it never holds the serving "
        "process's GIL. Unset: half the cores, 2 to 4. 0: threads of the serving process.",
    )
    max_consecutive_failures: int = Field(
        3, ge=1, description="Failed pipeline calls in a row (out of memory excepted) before /ready turns 503."
    )

    # --- storage ------------------------------------------------------------------------------
    image_dir: Path = Field(
        Path("images"), validation_alias=AliasChoices("IMAGE_DIR", "image_dir"), description="Local image store."
    )

    # --- storage backends and retention (issue 5) -----------------------------------------------
    storage: Literal["local", "s3"] = Field("local", description="Image store: local disk (IMAGE_DIR) or S3.")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint; unset: AWS.")
    s3_bucket: str | None = Field(None, description="Bucket (required with SDXL_STORAGE=s3).")
    s3_prefix: str = Field("sdxl-serve/", description="Key prefix inside the bucket.")
    s3_region: str | None = Field(None, description="Region name; unset: boto3's default chain.")
    s3_access_key_id: SecretStr | None = Field(None, description="Unset: boto3's default credential chain.")
    s3_secret_access_key: SecretStr | None = Field(None, description="Unset: boto3's default credential chain.")
    s3_path_style: bool = Field(False, description="Path-style addressing (MinIO, SeaweedFS, most non-AWS).")
    s3_presign_downloads: bool = Field(
        False, description="GET /download answers 307 to a presigned URL instead of streaming."
    )
    max_data_dir_size_gb: float = Field(
        0.0,
        ge=0,
        validation_alias=AliasChoices("MAX_DATA_DIR_SIZE_GB", "max_data_dir_size_gb"),
        description="Cap on the local store; oldest images are removed first. 0: no cap.",
    )
    max_image_age_s: float = Field(0.0, ge=0, description="Images older than this are removed. 0: kept forever.")

    # --- events (issue 5) ------------------------------------------------------------------------
    webhook_model_loaded: str | None = Field(
        None, validation_alias=AliasChoices("WEBHOOK_MODEL_LOADED", "webhook_model_loaded")
    )
    webhook_model_unloaded: str | None = Field(
        None, validation_alias=AliasChoices("WEBHOOK_MODEL_UNLOADED", "webhook_model_unloaded")
    )
    webhook_image_generated: str | None = Field(
        None, validation_alias=AliasChoices("WEBHOOK_IMAGE_GENERATED", "webhook_image_generated")
    )
    webhook_image_stored: str | None = Field(
        None, validation_alias=AliasChoices("WEBHOOK_IMAGE_STORED", "webhook_image_stored")
    )
    webhook_secret: SecretStr | None = Field(None, description="HMAC-SHA256 key signing every webhook request.")
    webhook_post_image: bool = Field(
        False, description="IGI's 'post' strategy: the PNG travels base64 in the image.stored payload."
    )
    node_id: str | None = Field(
        None,
        validation_alias=AliasChoices("SDXL_NODE_ID", "SALAD_MACHINE_ID", "node_id"),
        description="This replica's identity in events; unset: the host name.",
    )
    node_group: str | None = Field(
        None,
        validation_alias=AliasChoices("SDXL_NODE_GROUP", "SALAD_CONTAINER_GROUP_ID", "node_group"),
        description="The replica group's identity in events.",
    )

    # --- network and auth ---------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address `serve` binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port `serve` binds.")
    generation_auth_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("GENERATION_AUTH_KEY", "generation_auth_key"),
        description="API key, or a comma-separated list of keys. Unset: no auth (loopback only).",
    )
    allow_unauthenticated: bool = Field(
        False, description="Allow serving without GENERATION_AUTH_KEY on a non-loopback address."
    )
    docs: Literal["public", "protected", "off"] = Field(
        "public",
        description="/docs (Swagger UI, its files served by the service itself) and /openapi.json: public, even "
        "with a key (they describe the API and hold no secret); protected: they need the key like every other "
        "route (a browser is asked for it as a Basic password); off: not served.",
    )
    public_url: str | None = Field(
        None,
        description="The base URL clients reach this service at (e.g. https://sdxl.example.com), for the URLs of "
        "OpenAI `response_format=url` answers. Unset: relative URLs (/download/<id>.png); never the Host header.",
    )
    openai_model: str | None = Field(
        None,
        description="The registry model that OpenAI's own model names (dall-e-2, dall-e-3, gpt-image-1, ...) mean on "
        "/v1/; unset: the default model.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # --- connections (app/server/connections.py; nginx's defaults) -----------------------------------------------
    header_timeout_s: float = Field(
        60.0,
        ge=1,
        le=3600,
        description="A request head (request line and headers) must arrive whole this long after the connection "
        "opened or its previous response ended; otherwise 408 and the connection is closed.",
    )
    body_timeout_s: float = Field(
        60.0, ge=1, le=3600, description="Longest a request body may stall between two reads; then 408 and closed."
    )
    max_connections: int = Field(
        1000,
        ge=16,
        le=1_000_000,
        description="Open connections at most. Past it the oldest connection waiting for a request head is closed "
        "(or the new one refused, 503, when every connection has a request in progress). Kept 128 below the "
        "process's open-file limit.",
    )

    @field_validator("model", "refiner_model")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value.strip() if value is not None else None

    @field_validator("variant")
    @classmethod
    def _variant_name(cls, value: str | None) -> str | None:
        # It becomes part of file names (`diffusion_pytorch_model.<variant>.safetensors`): a name, never a path.
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not re.fullmatch(r"[A-Za-z0-9_-]+", value):
            raise ValueError(f"must be a variant name such as 'fp16', or 'none'; got {value!r}")
        return "none" if value.lower() == "none" else value

    @field_validator(
        "webhook_model_loaded", "webhook_model_unloaded", "webhook_image_generated", "webhook_image_stored"
    )
    @classmethod
    def _webhook_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            return None
        return check_webhook_url(str(info.field_name).upper(), value)

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> Settings:
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("SDXL_STORAGE=s3 needs SDXL_S3_BUCKET")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            # Half a key pair would silently mix with boto3's default chain; say so at startup instead.
            raise ValueError("set both SDXL_S3_ACCESS_KEY_ID and SDXL_S3_SECRET_ACCESS_KEY, or neither")
        return self

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return check_webhook_url("SDXL_PUBLIC_URL", value).rstrip("/")

    @model_validator(mode="after")
    def _a_set_key_must_be_usable(self) -> Settings:
        # Fail closed: a key that is set but holds no usable key (",", spaces) must not quietly turn auth off.
        if self.generation_auth_key is not None and not self.api_keys:
            raise ValueError(
                "GENERATION_AUTH_KEY is set but holds no key (only commas or spaces); set a key or unset it"
            )
        return self

    @model_validator(mode="after")
    def _pair_models(self) -> Settings:
        tiny = self.model in TINY_MODELS
        if self.refiner_model is None:
            self.refiner_model = TINY if tiny else SDXL_REFINER
        if tiny != (self.refiner_model == TINY):
            # The refiner borrows the base's text_encoder_2 and VAE, so their shapes must match.
            raise ValueError("SDXL_MODEL and SDXL_REFINER_MODEL must both be tiny models or both be real SDXL models")
        return self

    # --- derived ------------------------------------------------------------------------------
    @property
    def api_keys(self) -> tuple[str, ...]:
        if self.generation_auth_key is None:
            return ()
        keys = (k.strip() for k in self.generation_auth_key.get_secret_value().split(","))
        return tuple(k for k in keys if k)

    @property
    def replica(self) -> str:
        """This replica's name in job records and leases (as in events' node_info)."""
        return self.node_id or socket.gethostname()

    @property
    def refiner(self) -> str:
        assert self.refiner_model is not None  # filled in by _pair_models
        return self.refiner_model


def check_webhook_url(name: str, url: str) -> str:
    """Webhook URLs come only from settings; each must be http(s) with a host."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Name the parts that are wrong, not the whole URL: its path or query may hold a token.
        raise ValueError(
            f"{name} must be an http:// or https:// URL with a host, got scheme {parts.scheme!r} "
            f"and host {parts.hostname!r}"
        )
    return url.strip()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
