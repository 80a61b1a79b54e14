# The two commands of the README: `make run` and `make test`. Both set up what is missing.
VENV ?= .venv
ENV ?= base
export KEDRO_DISABLE_TELEMETRY := 1

.PHONY: setup run test lint format benchmark viz

setup:
	@bash scripts/setup.sh

run: setup
	$(VENV)/bin/kedro run --env $(ENV)

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/black --check src tests benchmarks
	$(VENV)/bin/ruff check src tests benchmarks

format: setup
	$(VENV)/bin/black src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

benchmark: setup
	$(VENV)/bin/python benchmarks/data_generation.py --baseline benchmarks/results/baseline_data_generation.json
	$(VENV)/bin/python benchmarks/rollout.py --baseline benchmarks/results/baseline_rollout.json
	$(VENV)/bin/python benchmarks/ppo.py --baseline benchmarks/results/baseline_ppo.json
	$(VENV)/bin/python benchmarks/step_kernels.py --baseline benchmarks/results/baseline_step_kernels.json
