"""`sdxl-serve models`: the service's models as a table (GET /models)."""

from __future__ import annotations

import argparse

from app.cli.connection import EXIT_OK, Subparsers, add_command, with_client
from app.client import Client, ModelInfo, ModelsResponse

_COLUMNS = ("NAME", "LOADED", "WHERE", "SIZE", "DEFAULTS", "HITS/MISSES", "SOURCE")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _row(model: ModelInfo, default: str) -> tuple[str, ...]:
    d = model.defaults
    defaults = f"{d.width}x{d.height}, {d.num_inference_steps} steps, cfg {d.guidance_scale:g}" if d else "-"
    name = f"{model.name} *" if model.name == default else model.name
    loaded = "yes" if model.loaded else "no"
    where = model.location.replace("_", " ")  # "not downloaded", "not built"
    return (name, loaded, where, _size(model.bytes), defaults, f"{model.hits}/{model.misses}", model.source)


def table(models: ModelsResponse) -> str:
    rows = [_COLUMNS, *(_row(m, models.default) for m in models.models)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.append(f"(* the default model: {models.default})")
    for kind, names in (
        ("loras", models.loras),
        ("vaes", models.vaes),
        ("controlnets", models.controlnets),
        ("schedulers", models.schedulers),
    ):
        lines.append(f"{kind}: {', '.join(names) or '-'}")
    return "\n".join(lines)


def models(client: Client, args: argparse.Namespace) -> int:
    listing = client.models()
    print(listing.model_dump_json(indent=2) if args.json else table(listing))
    return EXIT_OK


def add_parser(commands: Subparsers) -> None:
    p = add_command(
        commands,
        "models",
        "list the models the service can run, where each is loaded, and the add-ons a request may name",
        "  sdxl-serve models\n  sdxl-serve models --json | jq '.models[].name'",
    )
    p.add_argument("--json", action="store_true", help="print GET /models as JSON instead of a table")
    p.set_defaults(handler=with_client(models))
