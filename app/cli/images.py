"""`sdxl-serve generate | refine | download`: images from a running service to PNG files."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from app.cli.connection import EXIT_OK, Subparsers, add_command, with_client
from app.cli.progress import follow
from app.client import Client, ImageInfo, JobResponse, error_from_job


def output_paths(output: str | None, images: list[ImageInfo]) -> list[Path]:
    """Where each image goes: `<id>.png` here by default, or in the directory given (one ending in / is
    created), or the file given (with several images, FILE-0.png, FILE-1.png, ... in seed order)."""
    if output is None or output.endswith(("/", os.sep)) or Path(output).is_dir():
        folder = Path(output or ".")
        folder.mkdir(parents=True, exist_ok=True)  # "-o foxes/" names a directory, new or not
        return [folder / f"{image.id}.png" for image in images]
    path = Path(output)
    if len(images) == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix or '.png'}") for i in range(len(images))]


def _save(client: Client, job: JobResponse, args: argparse.Namespace) -> int:
    job = follow(client, job, quiet=args.quiet)
    if job.status != "succeeded":
        raise error_from_job(job)
    for image, path in zip(job.images, output_paths(args.output, job.images), strict=True):
        client.download(image.id, path)
        print(f"{path}  id={image.id}  seed={image.seed}")
    return EXIT_OK


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "negative_prompt": args.negative_prompt,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "seed": args.seed,
    }


def generate(client: Client, args: argparse.Namespace) -> int:
    fields = _sampling(args) | {
        "width": args.width,
        "height": args.height,
        "num_images": args.num_images,
        "model": args.model,
        "scheduler": args.scheduler,
    }
    return _save(client, client.submit(args.prompt, **fields), args)


def refine(client: Client, args: argparse.Namespace) -> int:
    fields = _sampling(args) | {"strength": args.strength}
    return _save(client, client.submit_refine(args.id, args.prompt, **fields), args)


def download(client: Client, args: argparse.Namespace) -> int:
    png = client.download(args.id)
    if args.output == "-":
        sys.stdout.buffer.write(png)
        return EXIT_OK
    path = Path(args.output or f"{args.id}.png")
    path.write_bytes(png)
    print(path)
    return EXIT_OK


def _add_job_options(parser: argparse.ArgumentParser, output_help: str) -> None:
    parser.add_argument("-o", "--output", help=f"PNG file, or directory (existing, or ending in /); {output_help}")
    parser.add_argument("--negative-prompt", help="what to keep out of the image")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    parser.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
    parser.add_argument("--seed", type=int, help="seed, for repeatable images (default: random, printed)")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar (none either when stderr is not a terminal)"
    )


def add_parsers(commands: Subparsers) -> None:
    p = add_command(
        commands,
        "generate",
        "generate images from a prompt and save them as PNG files",
        '  sdxl-serve generate "a lighthouse at dusk" --seed 42 -o lighthouse.png\n'
        '  sdxl-serve generate "a red fox" -n 4 -o foxes/ --url http://gpu-box:8000',
    )
    p.add_argument("prompt", help="what to draw")
    _add_job_options(p, "default: <id>.png here. With -n > 1: FILE-0.png, ...")
    p.add_argument("-n", "--num-images", type=int, default=1, help="images, seeds SEED..SEED+n-1 (default 1)")
    p.add_argument("--width", type=int, help="multiple of 8 (default: the model's native size)")
    p.add_argument("--height", type=int, help="multiple of 8 (default: the model's native size)")
    p.add_argument("--model", help="a model name from `sdxl-serve models` (default: the service's default)")
    p.add_argument("--scheduler", help="a scheduler from `sdxl-serve models` (default: the model's)")
    p.set_defaults(handler=with_client(generate))

    p = add_command(
        commands,
        "refine",
        "run the SDXL refiner over a stored image and save the result",
        '  sdxl-serve refine 6f11...c0de "a lighthouse at dusk, detailed" --strength 0.3 -o refined.png',
    )
    p.add_argument("id", help="id of a stored image (printed by generate)")
    p.add_argument("prompt", help="what the image shows")
    _add_job_options(p, "default: <id>.png here")
    p.add_argument("--strength", type=float, help="how much to re-noise, 0 < s <= 1 (default 0.3)")
    p.set_defaults(handler=with_client(refine))

    p = add_command(
        commands,
        "download",
        "download a stored image",
        "  sdxl-serve download 6f11...c0de -o lighthouse.png\n  sdxl-serve download 6f11...c0de -o - | display",
    )
    p.add_argument("id", help="id of a stored image")
    p.add_argument("-o", "--output", help="file to write, or - for stdout (default: <id>.png)")
    p.set_defaults(handler=with_client(download))
