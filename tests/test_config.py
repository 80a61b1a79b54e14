"""Which project's configuration a script or notebook reads."""

from __future__ import annotations

import pytest

from pvg_pipeline import config
from pvg_pipeline.config import find_project, load_parameters


def test_the_working_directory_picks_the_project(project_copy, monkeypatch):
    # Another copy of the project, with a seed of its own.
    seed_file = project_copy / "conf/test/parameters.yml"
    seed_file.write_text(seed_file.read_text() + "\nseed: 41\n")
    notebooks = project_copy / "notebooks"
    notebooks.mkdir()
    monkeypatch.chdir(notebooks)  # e.g. a notebook beside the project's conf
    assert find_project() == project_copy.resolve()
    assert load_parameters("test")["seed"] == 41
    assert load_parameters("test", config.PROJECT_ROOT / "conf")["seed"] != 41


def test_outside_any_project_the_installed_one_or_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_project() == config.PROJECT_ROOT  # an editable install's project
    monkeypatch.setattr(config, "PROJECT_ROOT", tmp_path / "site-packages")
    with pytest.raises(FileNotFoundError, match="pass project_path="):
        find_project()
