#!/usr/bin/env bash
# Prepare the GPU check on a machine without a GPU: the wheels that the GPU
# machine lacks, at this venv's versions, in .whl/, and the bundle in .gpu/.
# Idempotent; then, on the GPU machine (carry .whl and .gpu): bash benchmarks/gpu_run.sh
# The GPU image has torch, numpy, packaging, cloudpickle, zipp and jaxtyping.
set -eu
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
mkdir -p .whl .gpu
platforms=""
for tag in 2_17 2_24 2_27 2_28 2_31 2_34 2_35; do
  platforms="$platforms --platform manylinux_${tag}_x86_64"
done
for name in tensordict torchrl pyvers orjson hoptorch importlib_metadata lazy-importer; do
  version=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$name'))")
  stem=$(echo "$name" | tr - _)
  if ! ls .whl/"$stem"-"$version"-*.whl > /dev/null 2>&1; then
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp $platforms --platform manylinux2014_x86_64 \
      -d .whl "$name==$version"
  fi
done
[ -s .gpu/bundle.pt ] ||
  .venv/bin/python benchmarks/make_bundle.py --env gi_ppo --output .gpu/bundle.pt
ls -l .whl .gpu
