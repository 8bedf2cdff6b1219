#!/usr/bin/env bash
# Download, into .whl/ at the repository root, the wheels that the bare GPU machine lacks (bench/gpu/README.md):
# the service's own dependencies that its image does not ship, at the versions of lock/runtime-cpu.txt, for
# CPython 3.12 on x86-64 Linux. Extra package names may be given as arguments (also pinned from the lock).
# .whl/ is ignored through .git/info/exclude, never committed.
set -euo pipefail
cd "$(dirname "$0")/../.."
LOCK=lock/runtime-cpu.txt
# What app and bench import that the machine has not got (it has torch, transformers, accelerate, safetensors,
# httpx, peft, pillow, opencv-python-headless, prometheus-client, aiofiles, uvloop), and their own dependencies.
# requests, click, h11, anyio, importlib-metadata may be there already: carried anyway, they are small leaves;
# typing-extensions too, since pydantic-core 2.50 needs 4.16 (its Sentinel), newer than torch asks for.
PACKAGES=(
  diffusers requests urllib3 idna charset-normalizer certifi importlib-metadata zipp
  fastapi starlette anyio annotated-doc opentelemetry-api fastapi-offline python-multipart
  uvicorn click h11
  pydantic pydantic-core pydantic-settings python-dotenv annotated-types typing-inspection
  invisible-watermark pywavelets typing-extensions
)
PACKAGES+=("$@")
pins=()
for name in "${PACKAGES[@]}"; do
  pin=$(grep -ioE "^${name}==[^ ;\\]+" "$LOCK" | head -n1 || true)
  [[ -n "$pin" ]] || { echo "fetch-wheels: $name is not in $LOCK" >&2; exit 1; }
  pins+=("$pin")
done
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${pins[@]}"
count=$(find .whl -type f -name '*.whl' | wc -l)
echo "fetch-wheels: $count wheels, $(du -sh .whl | cut -f1) in .whl/" >&2
[[ "$count" -eq "${#pins[@]}" ]] || { echo "fetch-wheels: expected ${#pins[@]} wheels" >&2; exit 1; }
