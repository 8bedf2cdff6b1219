"""The dstack configurations (dstack/*.dstack.yml, .dstack/profiles.yml) checked offline with dstack's own models.

No dstack server, no cloud: the files are parsed exactly as `dstack apply` parses them on the client, and then
checked against what this service needs (SDXL's memory floors, our CLI's port, our readiness route, our settings'
environment names). The negative tests show the parser can fail, so a green run means something.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from dstack._internal.core.errors import ConfigurationError
from dstack._internal.core.models.configurations import (
    ServiceConfiguration,
    TaskConfiguration,
    parse_run_configuration,
)
from dstack._internal.core.models.envs import EnvSentinel
from dstack._internal.core.models.profiles import ProfilesConfig, SpotPolicy
from dstack._internal.core.models.runs import RunSpec
from dstack._internal.utils.interpolator import VariablesInterpolator
from packaging.specifiers import SpecifierSet
from pydantic import AliasChoices, SecretStr, ValidationError
from starlette.routing import Match

from app.__main__ import build_parser
from app.api.middleware.auth import PUBLIC_PATHS
from app.config import Settings
from app.engine.versions import read_lock

ROOT = Path(__file__).resolve().parent.parent
TASK = ROOT / "dstack" / "task.dstack.yml"
SERVICE = ROOT / "dstack" / "service.dstack.yml"
PROFILES = ROOT / ".dstack" / "profiles.yml"
RUN_CONFIGS = sorted((ROOT / "dstack").glob("*.dstack.yml"))

SDXL_GPU_GB = 12.0
SDXL_RAM_GB = 16.0
SDXL_DISK_GB = 50.0  # weights (~12 GB fp16, base + refiner), the CUDA torch wheel, pip's cache

# Secrets must never be written into a configuration: these come from `dstack secret set`.
SECRET_VARS = {"GENERATION_AUTH_KEY", "HF_TOKEN", "SDXL_S3_ACCESS_KEY_ID", "SDXL_S3_SECRET_ACCESS_KEY"}
SECRET_REF = re.compile(r"^\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")
# Variables a configuration takes from the user's shell at `dstack apply` (no value in the file), with a sample.
SHELL_SAMPLES = {
    "SDXL_S3_BUCKET": "sdxl-images",
    "SDXL_S3_ENDPOINT_URL": "https://s3.eu-west-1.amazonaws.com",
    "SDXL_S3_REGION": "eu-west-1",
}
# Read by huggingface_hub, not by our Settings.
HF_VARS = {"HF_HOME", "HF_TOKEN"}


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def parse(path: Path) -> TaskConfiguration | ServiceConfiguration:
    conf = parse_run_configuration(load(path))
    assert isinstance(conf, TaskConfiguration | ServiceConfiguration)
    return conf


def task() -> TaskConfiguration:
    conf = parse(TASK)
    assert isinstance(conf, TaskConfiguration)
    return conf


def service() -> ServiceConfiguration:
    conf = parse(SERVICE)
    assert isinstance(conf, ServiceConfiguration)
    return conf


def profiles() -> ProfilesConfig:
    return ProfilesConfig.model_validate(load(PROFILES))


def serve_args(conf: TaskConfiguration | ServiceConfiguration) -> Any:
    """The configuration's `python -m app serve ...` command, parsed by our own CLI parser."""
    serving = [shlex.split(c) for c in conf.commands if shlex.split(c)[:3] == ["python", "-m", "app"]]
    assert len(serving) == 1, conf.commands
    return build_parser().parse_args(serving[0][3:])


def settings_env_names() -> set[str]:
    """Every environment variable name `Settings` reads, from its fields and aliases."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {c.upper() for c in alias.choices if isinstance(c, str) and c.upper() == c}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def resolved_env(conf: TaskConfiguration | ServiceConfiguration) -> dict[str, str]:
    """The container's environment as dstack builds it: secrets interpolated, shell variables filled in."""
    secrets = {name: f"secret-{name.lower()}" for name in SECRET_VARS}
    interpolate = VariablesInterpolator({"secrets": secrets}).interpolate_or_error
    env = {}
    for name, value in conf.env.items():
        if isinstance(value, EnvSentinel):
            assert name in SHELL_SAMPLES, f"{name} is taken from the shell: add a sample to SHELL_SAMPLES"
            env[name] = SHELL_SAMPLES[name]
        else:
            env[name] = interpolate(value)
    return env


# --- every file parses ----------------------------------------------------------------------


def test_the_expected_files_exist() -> None:
    assert {TASK, SERVICE} <= set(RUN_CONFIGS)
    assert PROFILES.is_file()


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_run_configuration_parses(path: Path) -> None:
    parse(path)  # every configuration in dstack/, including ones added later


def test_configuration_types() -> None:
    assert isinstance(task(), TaskConfiguration)
    assert isinstance(service(), ServiceConfiguration)


def test_profiles_parse_with_one_default_and_no_resources() -> None:
    config = profiles()
    assert [p.name for p in config.profiles if p.default] == ["sdxl"]
    assert config.default() is not None
    # Since dstack 0.15 resources belong in run configurations; the profile model no longer has them.
    assert all("resources" not in raw for raw in load(PROFILES)["profiles"])


# --- resources: lower bounds, not exact sizes -------------------------------------------------


@pytest.mark.parametrize("path", [TASK, SERVICE], ids=lambda p: p.name)
def test_resources_are_sdxl_lower_bounds(path: Path) -> None:
    resources = parse(path).resources
    gpu = resources.gpu
    assert gpu is not None
    assert gpu.memory is not None
    assert (gpu.memory.min, gpu.memory.max) == (SDXL_GPU_GB, None), "gpu memory must be `12GB..` (at least)"
    assert gpu.name is None, "no GPU name: any GPU with enough memory will do"
    assert (gpu.count.min, gpu.count.max) == (1, None)  # dstack's default; it provisions the cheapest count
    assert (resources.memory.min, resources.memory.max) == (SDXL_RAM_GB, None), "memory must be `16GB..`"
    assert resources.disk is not None
    assert resources.disk.size.min is not None
    assert resources.disk.size.min >= SDXL_DISK_GB
    assert resources.disk.size.max is None


# --- the command line: install, then serve on the published port ------------------------------


@pytest.mark.parametrize("path", [TASK, SERVICE], ids=lambda p: p.name)
def test_serve_command_binds_all_interfaces_on_the_published_port(path: Path) -> None:
    conf = parse(path)
    args = serve_args(conf)
    assert args.command == "serve"
    assert args.host == "0.0.0.0", "dstack reaches the container from outside: loopback would be unreachable"
    if isinstance(conf, ServiceConfiguration):
        published = [conf.port.container_port]
    else:
        published = [p.container_port for p in conf.ports]
    assert published == [args.port]
    assert shlex.split(conf.commands[-1])[:4] == ["python", "-m", "app", "serve"], "serving is the last command"


@pytest.mark.parametrize("path", [TASK, SERVICE], ids=lambda p: p.name)
def test_commands_install_the_cuda_lock_and_nothing_else(path: Path) -> None:
    commands = [shlex.split(c) for c in parse(path).commands]
    installs = [c for c in commands if c[:2] == ["pip", "install"]]
    assert installs == [
        ["pip", "install", "--no-deps", "--require-hashes", "-r", "lock/runtime-cuda.txt"],
        ["pip", "install", "--no-deps", "--no-build-isolation", "-e", "."],
    ], "exactly the tested versions (GPU build of torch), then the project built by the locked setuptools"
    assert not [c for c in commands if "uv" in c[:1] or c[:1] == ["conda"]], "no second installer"
    lock = ROOT / "lock" / "runtime-cuda.txt"
    pins = read_lock(lock)
    assert "invisible-watermark" in pins and "opencv-python" not in pins, "the watermark, without the libGL trap"
    assert "+" not in pins["torch"] and any(name.startswith("nvidia-") for name in pins), "a CUDA build of torch"


@pytest.mark.parametrize("path", [TASK, SERVICE], ids=lambda p: p.name)
def test_a_gpu_run_never_falls_back_to_the_cpu(path: Path) -> None:
    """On a driver too old for the locked CUDA build, torch sees no GPU: `auto` would quietly pick the CPU."""
    env = resolved_env(parse(path))
    assert env["SDXL_DEVICE"] == "cuda"
    assert Settings(device=env["SDXL_DEVICE"]).device == "cuda"


def test_dstack_python_is_the_one_the_locks_are_resolved_for() -> None:
    makefile = (ROOT / "Makefile").read_text()
    locked = re.search(r"--python-version (\S+)", makefile)
    assert locked is not None
    for conf in (task(), service()):
        assert conf.python is not None
        assert conf.python.value == locked.group(1)


def test_task_and_service_install_the_same_way() -> None:
    assert task().commands == service().commands


def test_python_version_satisfies_the_project() -> None:
    requires = re.search(r'requires-python\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert requires is not None
    for conf in (task(), service()):
        assert conf.python is not None
        assert conf.python.value in SpecifierSet(requires.group(1))


# --- the service: probe, replicas, auth -------------------------------------------------------


@pytest.fixture(scope="module")
def sdxl_app() -> Any:
    from app.main import create_app

    return create_app(Settings(model="tiny"))  # not started: only its routing table is read


def routes_to(app: Any, method: str, path: str) -> bool:
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}
    return any(route.matches(dict(scope))[0] == Match.FULL for route in app.routes)


def test_service_probes_our_readiness_route(sdxl_app: Any) -> None:
    probes = service().probes
    assert probes is not None
    assert len(probes) == 1
    probe = probes[0]
    assert probe.type == "http"
    assert probe.url == "/ready"
    assert probe.method in (None, "get")
    assert routes_to(sdxl_app, "GET", probe.url)
    assert not routes_to(sdxl_app, "GET", "/no-such-route")  # the check itself can fail
    # dstack's probe carries no key: the route must be public.
    assert probe.url in PUBLIC_PATHS
    assert probe.headers == []
    assert probe.timeout is not None
    assert probe.interval is not None
    assert 1 <= probe.timeout <= probe.interval


def test_service_has_no_openai_model() -> None:
    # `model:` would add a /v1/chat/completions probe, which an image service cannot pass.
    assert service().model is None
    assert "model" not in load(SERVICE)


def test_service_autoscales_on_rps() -> None:
    conf = service()
    assert conf.replicas is not None
    assert conf.replicas.min == 1
    assert conf.replicas.max is not None
    assert conf.replicas.max > conf.replicas.min
    assert conf.scaling is not None
    assert conf.scaling.metric == "rps"
    assert conf.scaling.target > 0


def test_service_keeps_dstack_auth_on() -> None:
    # dstack's token travels in Authorization; ours in X-API-Key (app/api/middleware/auth.py accepts both at once).
    assert service().auth is True


def test_service_is_on_demand_whatever_the_default_profile_says() -> None:
    default = profiles().default()
    assert default is not None
    service_spec = RunSpec(configuration=service(), profile=default)
    assert service_spec.merged_profile.spot_policy == SpotPolicy.ONDEMAND
    assert service_spec.merged_profile.max_price == default.max_price
    task_spec = RunSpec(configuration=task(), profile=default)
    assert task_spec.merged_profile.spot_policy == default.spot_policy


# --- environment: real names, secrets as references, cache on the volume ----------------------


@pytest.mark.parametrize("path", [TASK, SERVICE], ids=lambda p: p.name)
def test_env_names_are_read_by_someone(path: Path) -> None:
    known = settings_env_names()
    assert {"SDXL_MODEL", "GENERATION_AUTH_KEY", "IMAGE_DIR", "SDXL_S3_BUCKET"} <= known  # the helper works
    unknown = [name for name in parse(path).env if name not in known and name not in HF_VARS]
    assert unknown == []


def test_hf_names_are_read_by_huggingface_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    import huggingface_hub
    from huggingface_hub import constants

    assert '"HF_HOME"' in inspect.getsource(constants)
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    assert huggingface_hub.get_token() == "hf_from_env"


@pytest.mark.parametrize("path", [TASK, SERVICE], ids=lambda p: p.name)
def test_secrets_are_references_and_interpolate(path: Path) -> None:
    conf = parse(path)
    for name in SECRET_VARS & set(conf.env):
        value = conf.env[name]
        assert isinstance(value, str)
        match = SECRET_REF.match(value)
        assert match is not None, f"{name} must be `${{{{ secrets.{name} }}}}`, not a value in the file"
        assert match.group(1) == name
    assert {"GENERATION_AUTH_KEY", "HF_TOKEN"} <= set(conf.env)
    env = resolved_env(conf)  # raises if a reference does not interpolate
    assert not any("${{" in v for v in env.values())


def clean_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper() in settings_env_names() or name.upper().startswith("SDXL_"):
            monkeypatch.delenv(name)


def test_task_env_builds_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_settings_env(monkeypatch)
    for name, value in resolved_env(task()).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.variant is None  # each registry entry reads its own variant (fp16 files in half precision)
    assert settings.storage == "local"
    assert settings.api_keys == ("secret-generation_auth_key",)


def test_service_env_builds_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_settings_env(monkeypatch)
    for name, value in resolved_env(service()).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.variant is None  # each registry entry reads its own variant (fp16 files in half precision)
    assert settings.storage == "s3"
    assert settings.s3_bucket == SHELL_SAMPLES["SDXL_S3_BUCKET"]
    assert settings.s3_endpoint_url == SHELL_SAMPLES["SDXL_S3_ENDPOINT_URL"]
    assert settings.s3_region == SHELL_SAMPLES["SDXL_S3_REGION"]
    assert isinstance(settings.s3_secret_access_key, SecretStr)
    assert settings.s3_secret_access_key.get_secret_value() == "secret-sdxl_s3_secret_access_key"
    assert settings.api_keys == ("secret-generation_auth_key",)


@pytest.mark.parametrize("path", [TASK, SERVICE], ids=lambda p: p.name)
def test_model_caches_live_on_a_volume(path: Path) -> None:
    conf = parse(path)
    mounts = [Path(v.path) for v in conf.volumes]
    assert mounts
    for name in ("HF_HOME", "SDXL_CACHE_DIR"):
        value = conf.env[name]
        assert isinstance(value, str)
        assert any(Path(value).is_relative_to(m) for m in mounts), f"{name}={value} is not on a volume"


def test_the_tasks_images_outlive_the_run() -> None:
    """The task stores images locally: on the volume, not in the container, which goes with the run (issue 15)."""
    conf = parse(TASK)
    image_dir = conf.env["IMAGE_DIR"]
    assert isinstance(image_dir, str)
    assert any(Path(image_dir).is_relative_to(Path(v.path)) for v in conf.volumes), image_dir
    assert parse(SERVICE).env["SDXL_STORAGE"] == "s3"  # the service's images are in the bucket


# --- the parser can say no --------------------------------------------------------------------


def with_resources(**resources: Any) -> dict[str, Any]:
    data = load(TASK)
    data["resources"] = {**data["resources"], **resources}
    return data


@pytest.mark.parametrize(
    "resources",
    [
        {"gpu": {"memory": "twelve"}},
        {"gpu": "12XB.."},
        {"gpu": "16GB..12GB"},
        {"gpu": "12GB:16GB"},
        {"memory": "sixteen"},
        {"gpus": "12GB.."},
    ],
    ids=str,
)
def test_malformed_resources_are_rejected(resources: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        parse_run_configuration(with_resources(**resources))


def test_what_the_shorthands_mean() -> None:
    """Why the configurations say `12GB..`: dstack reads the other spellings differently."""

    def gpu(spec: str) -> Any:
        conf = parse_run_configuration(with_resources(gpu=spec))
        return conf.resources.gpu

    exact = gpu("12GB")
    assert exact.memory is not None
    assert (exact.memory.min, exact.memory.max) == (12, 12)  # exactly 12 GB
    assert (gpu("12").count.min, gpu("12").memory) == (12, None)  # twelve GPUs
    assert gpu("twelve").name == ["twelve"]  # not an error: a GPU *model* named "twelve"


def test_unknown_keys_and_misplaced_options_are_rejected() -> None:
    data = load(SERVICE)
    with pytest.raises(ConfigurationError):
        parse_run_configuration({**data, "replica": 2})
    with pytest.raises(ConfigurationError):
        parse_run_configuration({**data, "replicas": "1..4", "scaling": None})  # a range needs scaling
    with pytest.raises(ConfigurationError):
        parse_run_configuration({**data, "probes": [{"type": "http", "url": "ready"}]})  # must start with /
    with pytest.raises(ValidationError):
        ProfilesConfig.model_validate({"profiles": [{"name": "old", "resources": {"gpu": "12GB.."}}]})
