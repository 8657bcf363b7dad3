#!/usr/bin/env bash
# One unattended GPU check of polyfuse: writes OUT_DIR/gpu_check.md and fails loudly.
#
#   scripts/gpu_check.sh OUT_DIR [--allow-no-gpu] [--tiny] [--sections env,tests,parity,bench,packing]
#
# Run from a fresh clone after `make test`'s set-up (it uses .venv/bin/python; PYTHON=... overrides).
# Sections (each under its own time limit, about 8 minutes in all on one GPU):
#   env      device name, torch / triton / polyfuse versions, git commit
#   tests    pytest -m gpu (a GPU test that is skipped on a machine with CUDA counts as a failure)
#   parity   scripts/gpu_parity.py: every backend, padded and packed (varlen), bf16 and fp16, forward
#            and backward, against the fp32 reference; plus the `auto` backend's parity-probe results
#   bench    scripts/bench_attention.py --quick: the masked multimodal grid and the FlashAttention-2 grid
#   packing  scripts/bench_packing.py (packed vs padded training step), when the script exists
# Exit status: 0 when every section passed; 1 when any failed (with CUDA present, a kernel failure
# is a failure, never a skip); 2 when no CUDA device is visible, unless --allow-no-gpu (a CPU smoke
# run of the same sections, e.g. `--allow-no-gpu --tiny --sections env,parity`).
set -u -o pipefail

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
OUT_DIR=$1; shift
ALLOW_NO_GPU=0; TINY=0; SECTIONS=env,tests,parity,bench,packing
# per-section time limits in seconds (about 8 minutes in all); override from the environment
LIMIT_ENV=${LIMIT_ENV:-20} LIMIT_TESTS=${LIMIT_TESTS:-180} LIMIT_PARITY=${LIMIT_PARITY:-120}
LIMIT_BENCH=${LIMIT_BENCH:-60} LIMIT_PACKING=${LIMIT_PACKING:-60}
while [ $# -gt 0 ]; do
  case $1 in
    --allow-no-gpu) ALLOW_NO_GPU=1 ;;
    --tiny) TINY=1 ;;
    --sections) SECTIONS=$2; shift ;;
    --sections=*) SECTIONS=${1#--sections=} ;;
    -h|--help) usage ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; usage ;;
  esac
  shift
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
PY=${PYTHON:-$ROOT/.venv/bin/python}
if [ ! -x "$PY" ]; then
  echo "gpu_check.sh: $PY not found: run \`make setup\` (or \`make test\`) first, or set PYTHON=..." >&2
  exit 2
fi
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)
REPORT=$OUT_DIR/gpu_check.md
# a fresh auto-backend cache: the parity probe and timings really run here, and the file is reported
export POLYFUSE_AUTO_CACHE=$OUT_DIR/attention_auto.json
rm -f "$POLYFUSE_AUTO_CACHE"

HAS_CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
FAILED=()
{
  echo "# polyfuse GPU check"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
} > "$REPORT"

if [ "$HAS_CUDA" != 1 ]; then
  {
    echo "**NO CUDA DEVICE VISIBLE.** torch.cuda.is_available() is false: the GPU checks did not run."
    echo
  } >> "$REPORT"
  if [ "$ALLOW_NO_GPU" != 1 ]; then
    echo "gpu_check.sh: FAILED: no CUDA device visible (use --allow-no-gpu for a CPU smoke run); report: $REPORT" >&2
    exit 2
  fi
  echo "(--allow-no-gpu: CPU smoke run of the sections below.)" >> "$REPORT"; echo >> "$REPORT"
fi

# run_section NAME LIMIT_SECONDS COMMAND...: output to OUT_DIR/NAME.log and into the report
run_section() {
  local name=$1 limit=$2; shift 2
  local log=$OUT_DIR/$name.log start rc status
  echo "== $name: $*" >&2
  start=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
  rc=$?
  if [ $rc -eq 0 ] && [ "$name" = tests ] && [ "$HAS_CUDA" = 1 ] && grep -qE '[0-9]+ skipped' "$log"; then
    rc=3  # a GPU test skipped on a GPU machine: silent is not passed
    echo "gpu_check.sh: GPU tests were skipped although CUDA is present" >> "$log"
  fi
  if [ $rc -eq 0 ]; then status=PASS; elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status="FAIL (timed out after ${limit}s)"; else status="FAIL (exit $rc)"; fi
  [ $rc -eq 0 ] || FAILED+=("$name")
  {
    echo "## $name: $status ($(( $(date +%s) - start )) s)"
    echo
    echo "\`$*\`"
    echo
    echo '```'
    tail -n 150 "$log"
    echo '```'
    echo
  } >> "$REPORT"
  echo "== $name: $status" >&2
}

has_section() { case ",$SECTIONS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

if has_section env; then
  run_section env "$LIMIT_ENV" "$PY" scripts/gpu_parity.py --versions
fi
if has_section tests; then
  run_section tests "$LIMIT_TESTS" "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider tests
fi
if has_section parity; then
  PARITY_ARGS=(--dtypes bf16,fp16)
  if [ "$HAS_CUDA" != 1 ]; then
    PARITY_ARGS=(--device cpu --dtypes fp32,bf16)
    [ "$TINY" = 1 ] && PARITY_ARGS=(--device cpu --dtypes fp32)
  fi
  [ "$TINY" = 1 ] && PARITY_ARGS+=(--tiny)
  run_section parity "$LIMIT_PARITY" "$PY" scripts/gpu_parity.py "${PARITY_ARGS[@]}"
  if [ -f "$POLYFUSE_AUTO_CACHE" ]; then
    { echo "auto backend: parity-probe results and choices made during this check (\`$POLYFUSE_AUTO_CACHE\`):"; echo
      echo '```json'; cat "$POLYFUSE_AUTO_CACHE"; echo; echo '```'; echo; } >> "$REPORT"
  fi
fi
if has_section bench; then
  BENCH_ARGS=(--quick --repeats 3)
  [ "$TINY" = 1 ] && BENCH_ARGS+=(--batch 1 --heads 2 --cpu-dtypes fp32)
  run_section bench-multimodal "$LIMIT_BENCH" "$PY" scripts/bench_attention.py --grid multimodal "${BENCH_ARGS[@]}"
  [ "$HAS_CUDA" = 1 ] && run_section bench-fa2 "$LIMIT_BENCH" "$PY" scripts/bench_attention.py --grid fa2 "${BENCH_ARGS[@]}"
fi
if has_section packing; then
  if [ -f scripts/bench_packing.py ]; then
    PACKING_ARGS=()
    "$PY" scripts/bench_packing.py --help 2>/dev/null | grep -q -- '--quick' && PACKING_ARGS+=(--quick)
    run_section packing "$LIMIT_PACKING" "$PY" scripts/bench_packing.py "${PACKING_ARGS[@]}"
  else
    { echo "## packing: not run"; echo; echo "scripts/bench_packing.py is not in this checkout."; echo; } >> "$REPORT"
  fi
fi

if [ ${#FAILED[@]} -gt 0 ]; then
  { echo "# RESULT: FAILED (${FAILED[*]})"; } >> "$REPORT"
  {
    echo "######################################################################"
    echo "# gpu_check.sh: FAILED sections: ${FAILED[*]}"
    echo "# report: $REPORT (logs: $OUT_DIR/<section>.log)"
    echo "######################################################################"
  } >&2
  exit 1
fi
echo "# RESULT: all sections passed" >> "$REPORT"
echo "gpu_check.sh: all sections passed; report: $REPORT" >&2
exit 0
