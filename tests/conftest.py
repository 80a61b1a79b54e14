"""Shared fixtures: telemetry off, a session-wide prime table, reference WL."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

from pvg_pipeline.pvg.graphs.primes import first_primes  # noqa: E402


@pytest.fixture(scope="session")
def prime_table() -> torch.Tensor:
    """The paper-scale prime table (2**24 - 1 primes; ~0.5 s)."""
    return first_primes(2**24 - 1)
