#!/usr/bin/env bash
# On the bare GPU machine (bench/gpu/README.md): install the carried wheels (.whl/, from fetch-wheels.sh) into a
# target folder, check that the service imports, then run `python -m bench --full-size --device cuda` with its
# results JSON, the service's log and this script's log in $OUT. Arguments are passed on to the benchmark
# (later flags win: `--size 512` overrides the default). BENCH_BUDGET_S caps the benchmark (default 480 s):
# the JSON is rewritten after every phase, so a run cut short still leaves what it measured.
#
# CPU dry run of everything but the install (here, with the project's venv):
#   SKIP_INSTALL=1 PYTHON=.venv/bin/python bench/gpu/run.sh --device cpu --arch tiny --size 256 --steps 2 --batch 2 --quick
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/sdxl-bench-out}
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
BENCH_BUDGET_S=${BENCH_BUDGET_S:-480}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
echo "run.sh: $(date -u +%FT%TZ) in $PWD, results in $OUT"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true

if [[ -z "${SKIP_INSTALL:-}" ]]; then
  shopt -s nullglob
  wheels=(.whl/*.whl)
  [[ ${#wheels[@]} -gt 0 ]] || { echo "run.sh: no wheels in .whl/ (bench/gpu/fetch-wheels.sh, and carry .whl)" >&2; exit 2; }
  started=$SECONDS
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}"
  echo "run.sh: installed ${#wheels[@]} wheels into $SITE in $((SECONDS - started))s"
  export PYTHONPATH="$SITE:$PWD"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
# Nothing may be fetched: the model is built here, and the refiner is never asked for (bench/full_size.py).
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
# One inductor cache for the benchmark and the service it starts: the service's compile reuses the kernels.
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/sdxl-bench-inductor}

# Fail in seconds, naming the package, rather than minutes in.
"$PYTHON" - <<'PY'
import importlib.metadata as md
import app.main, bench.full_size, bench.server, diffusers, fastapi, torch, transformers, uvicorn  # noqa: F401
from app.engine.versions import conflicts
names = ("torch", "diffusers", "transformers", "huggingface-hub", "accelerate", "peft", "fastapi", "pydantic")
print("run.sh: " + ", ".join(f"{n} {md.version(n)}" for n in names), "cuda", torch.cuda.is_available())
for problem in conflicts():
    print("run.sh: version conflict:", problem)
PY

status=0
timeout --signal=TERM --kill-after=30 "$BENCH_BUDGET_S" \
  "$PYTHON" -m bench --full-size --device cuda --out "$OUT" "$@" || status=$?
[[ $status -eq 124 ]] && echo "run.sh: the benchmark ran past ${BENCH_BUDGET_S}s; $OUT has what it measured"
ls -l "$OUT"
exit "$status"
