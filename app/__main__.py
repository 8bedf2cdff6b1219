"""Command line: `python -m app serve | generate | refine | download | models` (also `sdxl-serve ...`).

Heavy imports (torch, diffusers, the app itself) happen inside `serve`, so `--help` and the client commands
start at once.
"""

from __future__ import annotations

import argparse
import sys

from app.cli import images, models, serve
from app.cli.connection import EXIT_STATUSES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdxl-serve",
        description="Self-hosted Stable Diffusion XL image service: run it (serve), or use a running one.",
        epilog="run `sdxl-serve COMMAND --help` for a command's options and examples\n\n"
        "client commands (generate, refine, download, models) " + EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parser(commands)
    images.add_parsers(commands)
    models.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
