#!/usr/bin/env bash
# Second GPU check: the captured PPO step with a torch.compile'd loss (same set-up
# as gpu_run.sh). About 3 minutes, most of it compiling.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
BUNDLE=$PWD/.gpu/bundle.pt
cd benchmarks || exit 1
timeout 130 python3 ppo.py --bundle "$BUNDLE" --device cuda --iterations 10 --compile \
  --output "$OUT/ppo_cuda_graphs_compiled.json"
timeout 90 python3 gpu_check.py --bundle "$BUNDLE" --device cuda --compile \
  --one-step-only 2>&1 | tee "$OUT/gpu_check_compiled.log"
