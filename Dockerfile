# GPU image: CUDA torch, libprimesieve-dev, the project, a non-root user.
# Build:  docker build -t pvg_pipeline .
# Run:    docker run --gpus all -e WANDB_API_KEY pvg_pipeline kedro run --env gi_ppo
# Viz:    docker run -p 4141:4141 pvg_pipeline kedro viz run --host 0.0.0.0
FROM python:3.11-slim-bookworm

ENV KEDRO_DISABLE_TELEMETRY=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# Bookworm's libprimesieve-dev is the version the primesieve wheel is built against.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libprimesieve-dev build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 pvg
WORKDIR /home/pvg/pvg_pipeline

# CUDA build of torch first, so the project's torch pin is already satisfied.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128

COPY --chown=pvg:pvg pyproject.toml README.md ./
COPY --chown=pvg:pvg src ./src
RUN pip install -e .
COPY --chown=pvg:pvg conf ./conf
# Only the empty folder layout: .dockerignore keeps generated versions out.
COPY --chown=pvg:pvg data ./data

USER 1000
# The fused CPU kernels, built once here (not inside the first training run).
RUN python -c "from pvg_pipeline.accelerate.cpu.kernels import load_extension; load_extension()"
# No credentials are baked in: pass WANDB_API_KEY with `docker run -e` at run time.
CMD ["kedro", "run"]
