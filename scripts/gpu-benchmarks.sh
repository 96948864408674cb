#!/usr/bin/env bash
# Issue 14's GPU tables in one device run, in order of what matters most, each under its own time cap and all
# under one budget (BUDGET_S, default 540 s: a 600 s run with room to write). Needs the wheels the image lacks:
#
#   bash scripts/device-wheels.sh                       # here: .whl/ (31 MB; the tree stays under 64 MiB)
#   run(command="bash scripts/gpu-benchmarks.sh", carry=[".whl"], timeout_s=600)    # on the H200
#
# Writes $OUT/benchmarks.md (every command with its output and exit status) and $OUT/errors.log. A command that
# runs out of its cap is stopped (exit 124) and the next one runs; one that would start with under 30 s left is
# skipped and says so. SMOKE=1 runs the same list at tiny shapes on the CPU (a check of this script, no GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-build/gpu-out}"
mkdir -p "$out"
report="$out/benchmarks.md"
: > "$report"
if [ -d .whl ] && [ "${SKIP_WHEELS:-0}" != 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "could not install the carried wheels" | tee -a "$report"; exit 2; }
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
deadline=$(( $(date +%s) + ${BUDGET_S:-540} ))

bench() {  # bench NAME CAP_SECONDS COMMAND...
  local name=$1 cap=$2
  shift 2
  local left=$(( deadline - $(date +%s) ))
  if [ "$left" -lt 30 ]; then
    printf '## %s\n\nskipped: %s s of the budget left\n\n' "$name" "$left" >> "$report"
    return
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  printf '## %s\n\n```\n$ %s\n' "$name" "$*" >> "$report"
  local started=$(date +%s)
  timeout "$cap" "$@" >> "$report" 2>> "$out/errors.log"
  local rc=$?
  printf '```\nexit %s after %s s (cap %s s)\n\n' "$rc" "$(( $(date +%s) - started ))" "$cap" >> "$report"
}

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU";
  python3 -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)"
  echo; } >> "$report"

if [ "${SMOKE:-0}" = 1 ]; then
  dev=cpu; dg=tiny; ms=tiny; shapes=1x16x8192; sc_shape=4x16x8192; ctx_shape=2x64; docs=2; lengths=64
else
  dev=cuda; dg=released; ms=llada8b; shapes=1x256x262144,8x256x262144,16x256x262144; sc_shape=16x256x262144; ctx_shape=16x2048
  docs=64; lengths=64,256
fi
dead_redis=redis://127.0.0.1:1/0  # no Redis on the device: the worker path runs without its event bus
bench "Worker throughput against the bare-forward ceiling" 150 \
  python3 benchmarks/harness.py --device "$dev" --skip-queue --tables throughput --redis-url "$dead_redis"
bench "DiffusionGemma, the released configuration (random bf16 weights)" 200 \
  python3 benchmarks/diffusion_gemma.py --shape "$dg" --device "$dev" --batches 1,8 --json-batches 1
bench "A masked LM at LLaDA-8B's width and depth (random bf16 weights)" 120 \
  python3 benchmarks/masked_shapes.py --shape "$ms" --device "$dev" --batches 1,8,16,32
bench "The same with a JSON-schema target on every job" 100 \
  python3 benchmarks/masked_shapes.py --shape "$ms" --device "$dev" --batches 1,8,16,32 --json
bench "The LLaDA-8B-shaped LM under torch.compile with CUDA graphs (REDRAFT_TORCH_COMPILE=reduce-overhead)" 150 \
  python3 benchmarks/masked_shapes.py --shape "$ms" --device "$dev" --batches 1,16 --torch-compile reduce-overhead
bench "The group steps at DiffusionGemma's width and vocabulary (no model)" 60 \
  python3 benchmarks/step_loop.py --device "$dev" --shapes "$shapes"
bench "Structure targets at V = 262,144" 90 python3 benchmarks/constraint_cost_262k.py --lengths "$lengths" --repeats 1
bench "Slot decoder memory" 30 python3 benchmarks/dp_memory.py
bench "Prefix cache (opt-in), quality and speed" 60 \
  python3 benchmarks/prefix_cache.py --device "$dev" --docs "$docs"
bench "What the DiffusionGemma adapter assembles a step: self-conditioning input, stacked encoder caches (no model)" 30 \
  python3 benchmarks/decoder_inputs.py --device "$dev" --shape "$sc_shape" --context "$ctx_shape"
cat "$report"
