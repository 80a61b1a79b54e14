#!/usr/bin/env bash
# Issue 7's GPU check, as one command on the lent GPU machine (see
# docs/performance.md). Expects wheels of tensordict, torchrl and their missing
# dependencies in .whl/ and a bundle in .gpu/, both written here, without the
# device, by
#   bash benchmarks/gpu_prepare.sh
# Results go to $OUT (or ./gpu-results).
#   bash benchmarks/gpu_run.sh           CUDA graphs with and without the two streams,
#                                        the lean step and the captured game step, then
#                                        3 min of training (~8-9 min)
#   bash benchmarks/gpu_run.sh compile   the captured step with a compiled loss (~3 min)
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
BUNDLE=$PWD/.gpu/bundle.pt
cd benchmarks || exit 1
if [ "${1:-}" = compile ]; then
  timeout 130 python3 ppo.py --bundle "$BUNDLE" --device cuda --iterations 10 --compile \
    --output "$OUT/ppo_cuda_graphs_compiled.json"
  timeout 90 python3 gpu_check.py --bundle "$BUNDLE" --device cuda --compile \
    --one-step-only 2>&1 | tee "$OUT/gpu_check_compiled.log"
  exit
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, tensordict, torchrl; print('torch', torch.__version__, \
'tensordict', tensordict.__version__, 'torchrl', torchrl.__version__)" || exit 1
timeout 120 python3 gpu_check.py --bundle "$BUNDLE" --device cuda 2>&1 | tee "$OUT/gpu_check.log"
# The two-stream update has not run on a device before the seventh session's
# code: if it does not give the sequential result, time the rest without it.
if ! grep -q "^PASS agents on their own streams" "$OUT/gpu_check.log"; then
  echo "two-stream update not confirmed by gpu_check: PVG_CUDA_STREAMS=0 below"
  export PVG_CUDA_STREAMS=0
fi
# Likewise the eighth session's lean step (explicit loss gradient, no gradient
# accumulation): if the step is not captured or does not match the plain one,
# time the rest without it.
if grep -q "^FAIL one captured gradient step" "$OUT/gpu_check.log" ||
  ! grep -q "^PASS one captured gradient step: gradient" "$OUT/gpu_check.log"; then
  echo "lean captured step not confirmed by gpu_check: PVG_LEAN_STEP=0 below"
  export PVG_LEAN_STEP=0
fi
# And the eighth session's game step captured with the acting step.
if ! grep -q "^PASS captured game step" "$OUT/gpu_check.log"; then
  echo "captured game step not confirmed by gpu_check: PVG_GRAPHED_GAME_STEP=0 below"
  export PVG_GRAPHED_GAME_STEP=0
fi
timeout 75 python3 ppo.py --bundle "$BUNDLE" --device cuda --iterations 8 \
  --alternate PVG_CUDA_STREAMS --output "$OUT/ppo_cuda_graphs.json"
# The eighth session's captured step with about a third fewer kernels, vs without.
timeout 75 python3 ppo.py --bundle "$BUNDLE" --device cuda --iterations 8 \
  --alternate PVG_LEAN_STEP --output "$OUT/ppo_cuda_lean_step.json"
# And its captured game step (collection), vs the eager game step after acting.
timeout 75 python3 ppo.py --bundle "$BUNDLE" --device cuda --iterations 8 \
  --alternate PVG_GRAPHED_GAME_STEP --output "$OUT/ppo_cuda_game_step.json"
timeout 230 python3 train_throughput.py --bundle "$BUNDLE" --device cuda --minutes 3 \
  --output "$OUT/train_throughput_cuda.json"
