"""The uvicorn configuration of the service: the same for the CLI, the tests and the benchmarks."""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass
from typing import Any

import uvicorn

from app.config import Settings
from app.server.connections import ConnectionLimits, protocol_class

logger = logging.getLogger(__name__)

# File descriptors kept for what is not a connection: model files, the store, logs, torch's and the loop's own.
RESERVED_FDS = 128
MIN_CONNECTIONS = 16
MAX_BACKLOG = 2048  # uvicorn's default


@dataclass(frozen=True)
class Sockets:
    max_connections: int
    backlog: int


def fit_file_limit(wanted: int) -> Sockets:
    """The connection cap and listen backlog, within the open-file limit: past it accept fails in a loop and
    nothing, /health included, is answered. asyncio accepts up to `backlog` sockets in one go before any of them
    can close an older connection to make room, so at the peak `max_connections + backlog` are open."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return Sockets(wanted, MAX_BACKLOG)
    free = soft - RESERVED_FDS
    backlog = min(MAX_BACKLOG, max(MIN_CONNECTIONS, free // 4))
    cap = max(MIN_CONNECTIONS, min(wanted, free - backlog))
    if cap < wanted:
        logger.warning(
            "serving at most %d connections, not SDXL_MAX_CONNECTIONS=%d: the open-file limit is %d (ulimit -n), "
            "%d descriptors are kept for the rest and %d for the accept backlog",
            cap,
            wanted,
            soft,
            RESERVED_FDS,
            backlog,
        )
    return Sockets(cap, backlog)


def server_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """`overrides`: uvicorn.Config's own arguments (tests bind a free port)."""
    sockets = fit_file_limit(settings.max_connections)
    limits = ConnectionLimits(
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_connections=sockets.max_connections,
    )
    values: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": protocol_class(limits),
        # asyncio's loop even where uvloop is installed (uvicorn's "auto" would pick it): when accept fails
        # (out of descriptors or buffers) asyncio logs it and listens again a second later, where uvloop closes
        # the listening socket without a word and the process serves nothing more. uvloop saved ~3 ms per
        # request here (2026-12-03); tests/server/test_event_loop.py checks the recovery.
        "loop": "asyncio",
        "backlog": sockets.backlog,
        "log_config": None,
        "access_log": False,  # RequestLogMiddleware logs each request, with what a client controls escaped
        "timeout_graceful_shutdown": int(settings.shutdown_grace_s) + 1,
        **overrides,
    }
    return uvicorn.Config(app, **values)
