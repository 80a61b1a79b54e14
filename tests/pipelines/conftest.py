"""A temporary copy of the project, so session runs never touch the real data/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

PROJECT = Path(__file__).parents[2]


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
