"""Shared fixtures: telemetry off, a session-wide prime table, reference WL."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

from pvg_pipeline.pvg.graphs.primes import first_primes  # noqa: E402


@pytest.fixture(scope="session")
def prime_table() -> torch.Tensor:
    """The paper-scale prime table (2**24 - 1 primes; ~0.5 s)."""
    return first_primes(2**24 - 1)


PROJECT = Path(__file__).parents[1]


@pytest.fixture
def project_copy(tmp_path, monkeypatch) -> Path:
    """``conf/`` and ``pyproject.toml`` in a fresh folder, used as the working dir."""
    shutil.copytree(
        PROJECT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local")
    )
    (tmp_path / "conf" / "local").mkdir()
    shutil.copy(PROJECT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(
        PROJECT / "src",
        tmp_path / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` where there is no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
