"""`sdxl-serve serve`: run the HTTP service. Heavy imports (uvicorn, the app, torch) happen inside `serve`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

from pydantic import ValidationError

from app.config import Settings, is_loopback

logger = logging.getLogger("app")

EXIT_CONFIG = 2
EXIT_STARTUP = 1


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request with its full URL at INFO; webhook URLs often carry tokens.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _check_exposure(settings: Settings) -> str | None:
    """Refuse to run open on a reachable address; say so when running open on loopback."""
    if settings.api_keys:
        return None
    if is_loopback(settings.host):
        logger.warning("GENERATION_AUTH_KEY is not set: serving WITHOUT auth, on loopback %s only", settings.host)
        return None
    if settings.allow_unauthenticated:
        logger.warning("GENERATION_AUTH_KEY is not set and SDXL_ALLOW_UNAUTHENTICATED=true: open on %s", settings.host)
        return None
    return (
        f"refusing to listen on {settings.host} without GENERATION_AUTH_KEY; set a key, "
        "bind 127.0.0.1, or set SDXL_ALLOW_UNAUTHENTICATED=true"
    )


def serve(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if k in ("host", "port", "model") and v}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"sdxl-serve: invalid settings: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _configure_logging(settings.log_level)
    if problem := _check_exposure(settings):
        print(f"sdxl-serve: {problem}", file=sys.stderr)
        return EXIT_CONFIG

    from app.main import create_app
    from app.server.config import server_config
    from app.server.graceful import GracefulServer

    failed = False

    def on_fatal() -> None:
        nonlocal failed
        failed = True
        server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal)
    config = server_config(app, settings)
    server = GracefulServer(config)
    # uvicorn re-raises SIGTERM/SIGINT to the previous handler after its graceful shutdown; with the default
    # handler the process would then die by the signal. A graceful stop is a success: exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    return EXIT_STARTUP if failed else 0


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p_serve = commands.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the HTTP service. Every option also reads its SDXL_* environment variable.",
    )
    p_serve.add_argument("--host", help="address to bind (default 127.0.0.1; env SDXL_HOST)")
    p_serve.add_argument("--port", type=int, help="port to bind (default 8000; env SDXL_PORT)")
    p_serve.add_argument(
        "--model",
        help="the default model: a registry name (sdxl-base, sdxl-turbo, sdxl-anime, sdxl-anime-legacy, tiny, "
        "tiny-b, or one from SDXL_MODELS_FILE), a hub id or a local directory (env SDXL_MODEL)",
    )
    p_serve.set_defaults(handler=serve)
