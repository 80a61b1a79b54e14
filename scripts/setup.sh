#!/usr/bin/env bash
# Idempotent set-up: system package, virtual environment, Python packages.
# Re-running it does nothing unless pyproject.toml changed or something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
STAMP="$VENV/.setup-stamp"

if ! dpkg -s libprimesieve-dev >/dev/null 2>&1; then
  echo "setup: installing libprimesieve-dev (needed to build the primesieve package)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libprimesieve-dev
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi

if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] \
   || ! "$VENV/bin/python" -c "import pvg_pipeline, torch, kedro" >/dev/null 2>&1; then
  echo "setup: installing Python packages into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # torch==2.13.0 is pinned in pyproject.toml so pip takes the CPU wheel here; for
  # CUDA, install a CUDA build of torch first (see README, "GPU").
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
  touch "$STAMP"
fi

# Build the fused CPU kernels now (~1.5 min) rather than in the first run, and again
# whenever their sources change; the agents fall back to PyTorch if they cannot be
# built.
KERNELS="src/pvg_pipeline/accelerate/cpu"
KERNEL_STAMP="$VENV/.kernels-stamp"
if [ ! -f "$KERNEL_STAMP" ] || [ -n "$(find "$KERNELS" \( -name "*.cpp" -o -name kernels.py \) -newer "$KERNEL_STAMP")" ]; then
  echo "setup: building the fused CPU kernels (about a minute, once)"
  "$VENV/bin/python" -c "from pvg_pipeline.accelerate.cpu.kernels import load_extension; load_extension()"
  touch "$KERNEL_STAMP"
fi
