#!/usr/bin/env bash
# The GPU check, as one command on a machine with a CUDA GPU (see
# docs/performance.md). Expects wheels of tensordict, torchrl and their missing
# dependencies in .whl/ and a bundle in .gpu/, both written beforehand, without a
# GPU, by
#   bash benchmarks/gpu_prepare.sh
# Results go to $OUT (or ./gpu-results).
#   bash benchmarks/gpu_run.sh           the checks, 3 min of training, then one
#                                        iteration's phases with and without each new
#                                        GPU path (at most PVG_GPU_BUDGET_S=570 s)
#   bash benchmarks/gpu_run.sh compile   the captured step with a compiled loss (~3 min)
#   bash benchmarks/gpu_run.sh seeds     training seeds 0, 1, 2 for 1 500 iterations each
#                                        (PVG_GPU_ITERATIONS), test accuracy (~8 min)
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
# (PVG_GPU_DEVICE=cpu with the venv's python3 first on PATH rehearses it here.)
DEVICE=${PVG_GPU_DEVICE:-cuda}
MINUTES=${PVG_GPU_TRAIN_MINUTES:-3}
python3 -c "import torchrl" 2>/dev/null ||
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
BUNDLE=$PWD/.gpu/bundle.pt
cd benchmarks || exit 1
# The whole check fits in 10 minutes: each step runs for at most what is left of
# BUDGET seconds, the training run (the headline figure) before the A/B.
BUDGET=${PVG_GPU_BUDGET_S:-570}
bounded() { # bounded MAX command...: run for at most MAX s or what is left
  local limit=$((BUDGET - SECONDS))
  [ "$limit" -gt "$1" ] && limit=$1
  shift
  if [ "$limit" -lt 40 ]; then echo "skipped, out of time: $*"; return 124; fi
  timeout "$limit" "$@"
}
if [ "${1:-}" = seeds ]; then
  # How much the test accuracy varies between training seeds (seed 0 once gave
  # 0.59 on an H100 and 0.87 on the CPU after 1 825 iterations).
  for seed in 0 1 2; do
    bounded 180 python3 train_throughput.py --bundle "$BUNDLE" --device "$DEVICE" \
      --minutes 2.6 --iterations "${PVG_GPU_ITERATIONS:-1500}" --seed "$seed" \
      --output "$OUT/train_throughput_cuda_seed$seed.json"
  done
  exit
fi
if [ "${1:-}" = compile ]; then
  timeout 130 python3 ppo.py --bundle "$BUNDLE" --device "$DEVICE" --iterations 10 --compile \
    --output "$OUT/ppo_cuda_graphs_compiled.json"
  timeout 90 python3 gpu_check.py --bundle "$BUNDLE" --device "$DEVICE" --compile \
    --one-step-only 2>&1 | tee "$OUT/gpu_check_compiled.log"
  exit
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, tensordict, torchrl; print('torch', torch.__version__, \
'tensordict', tensordict.__version__, 'torchrl', torchrl.__version__)" || exit 1
bounded 120 python3 gpu_check.py --bundle "$BUNDLE" --device "$DEVICE" 2>&1 |
  tee "$OUT/gpu_check.log"
# Each GPU path added since the last device run is timed (and trained with) only
# where gpu_check confirms it; the ones confirmed are A/B-timed below.
confirmed=""
confirm() { # confirm VAR PATTERN...: VAR stays on if gpu_check printed each PATTERN
  local var=$1 pattern
  shift
  for pattern in "$@"; do
    if ! grep -q "^$pattern" "$OUT/gpu_check.log"; then
      echo "$var's path not confirmed by gpu_check ($pattern): $var=0 below"
      export "$var=0"
      return
    fi
  done
  confirmed="${confirmed:+$confirmed,}$var"
}
# The agents' captured steps on two streams, bit for bit.
confirm PVG_CUDA_STREAMS "PASS agents on their own streams"
# The lean step (explicit loss gradient), captured and matching.
if grep -q "^FAIL one captured gradient step" "$OUT/gpu_check.log"; then
  echo "a captured gradient step failed gpu_check: PVG_LEAN_STEP=0 below"
  export PVG_LEAN_STEP=0
else
  confirm PVG_LEAN_STEP "PASS one captured gradient step: gradient (prover)" \
    "PASS one captured gradient step: gradient (verifier)"
fi
# The game step captured with the acting step.
confirm PVG_GRAPHED_GAME_STEP "PASS captured game step"
train() { # train MAX_SECONDS MINUTES
  bounded "$1" python3 train_throughput.py --bundle "$BUNDLE" --device "$DEVICE" \
    --minutes "$2" --output "$OUT/train_throughput_cuda.json" 2>&1 |
    tee "$OUT/train_throughput.log"
}
train $((MINUTES * 60 + 60)) "$MINUTES"
if [ ! -s "$OUT/train_throughput_cuda.json" ] && [ $((BUDGET - SECONDS)) -gt 150 ]; then
  echo "training failed: again with the streams, the lean step and the captured game step off"
  export PVG_CUDA_STREAMS=0 PVG_LEAN_STEP=0 PVG_GRAPHED_GAME_STEP=0
  confirmed=""
  minutes=$(((BUDGET - SECONDS - 90) / 60))
  train $((BUDGET - SECONDS - 20)) $((minutes > 0 ? minutes : 1))
fi
# Per-phase times, each confirmed path on vs off, interleaved in one process.
bounded 110 python3 ppo.py --bundle "$BUNDLE" --device "$DEVICE" --iterations 8 \
  ${confirmed:+--alternate "$confirmed"} --output "$OUT/ppo_cuda_graphs.json"
# With time to spare: the same with the loss compiled (experimental, see the docs).
if [ $((BUDGET - SECONDS)) -gt 120 ]; then
  bounded 150 python3 ppo.py --bundle "$BUNDLE" --device "$DEVICE" --iterations 10 \
    --compile --output "$OUT/ppo_cuda_graphs_compiled.json"
fi
echo "gpu_run.sh finished after $SECONDS s"
