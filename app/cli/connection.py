"""What every client command shares: where the service is, the key, the exit statuses, and turning any failure
into one line on stderr instead of a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TypeAlias

from app.client import (
    AuthenticationError,
    Client,
    InvalidRequestError,
    PayloadTooLargeError,
    SdxlConnectionError,
    SdxlError,
)
from app.client.base import DEFAULT_TIMEOUT_S, DEFAULT_URL

EXIT_OK = 0
EXIT_FAILED = 1  # the service answered an error, or the job failed
EXIT_USAGE = 2  # argparse's own status; also a request the service refused as invalid (422, 413)
EXIT_CONNECT = 3  # no answer: refused, unreachable, timed out
EXIT_AUTH = 4  # 401: missing or wrong API key
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

EXIT_STATUSES = f"""exit status:
  {EXIT_OK}  success
  {EXIT_FAILED}  the service answered an error, or the job failed or was cancelled
  {EXIT_USAGE}  usage error: bad arguments, or the service rejected the request as invalid (422, 413)
  {EXIT_CONNECT}  could not connect, or timed out
  {EXIT_AUTH}  authentication failed (401): check --api-key
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); the job is cancelled"""

Command = Callable[[Client, argparse.Namespace], int]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # generic only to type checkers


def client_options() -> argparse.ArgumentParser:
    """The options of every client command, as a parent parser."""
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("connection")
    group.add_argument("--url", help=f"the service's base URL (env SDXL_URL; default {DEFAULT_URL})")
    # No default shown or stored here: --help must never print a key read from the environment.
    group.add_argument("--api-key", help="API key, sent as X-API-Key (env SDXL_API_KEY, else GENERATION_AUTH_KEY)")
    group.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for one answer (default %(default)s)"
    )
    group.add_argument(
        "--retries",
        type=int,
        default=2,
        help="retries after 429/503 (honouring Retry-After) or a refused connection (default %(default)s)",
    )
    return options


def add_command(commands: Subparsers, name: str, summary: str, examples: str) -> argparse.ArgumentParser:
    """A client command's parser: the connection options, examples and the exit statuses in its --help."""
    return commands.add_parser(
        name,
        parents=[client_options()],
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog=f"examples:\n{examples}\n\n{EXIT_STATUSES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _api_key(args: argparse.Namespace) -> str | None:
    if args.api_key:
        return str(args.api_key)
    if key := os.environ.get("SDXL_API_KEY"):
        return key
    # The server's own variable may hold several comma-separated keys; any one of them works.
    keys = [k.strip() for k in os.environ.get("GENERATION_AUTH_KEY", "").split(",") if k.strip()]
    return keys[0] if keys else None


def exit_status(error: SdxlError) -> int:
    if isinstance(error, SdxlConnectionError):
        return EXIT_CONNECT
    if isinstance(error, AuthenticationError):
        return EXIT_AUTH
    if isinstance(error, InvalidRequestError | PayloadTooLargeError):
        return EXIT_USAGE
    return EXIT_FAILED


def fail(message: object, status: int) -> int:
    print(f"sdxl-serve: error: {message}", file=sys.stderr)
    return status


def with_client(command: Command) -> Callable[[argparse.Namespace], int]:
    """Runs `command` with a connected client; every failure becomes one line on stderr and an exit status."""

    def handler(args: argparse.Namespace) -> int:
        url = args.url or os.environ.get("SDXL_URL") or DEFAULT_URL
        try:
            client = Client(url, api_key=_api_key(args), timeout=args.timeout, max_retries=args.retries)
        except ValueError as exc:  # a malformed --url
            return fail(exc, EXIT_USAGE)
        try:
            with client:
                return command(client, args)
        except SdxlError as error:
            return fail(error, exit_status(error))
        except OSError as exc:  # the output file could not be written
            return fail(exc, EXIT_FAILED)
        except KeyboardInterrupt:
            return fail("interrupted", EXIT_INTERRUPTED)

    return handler
