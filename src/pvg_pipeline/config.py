"""Load an environment's parameters outside a Kedro session (benchmarks, scripts)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from pvg_pipeline.config_loader import ProjectConfigLoader
from pvg_pipeline.settings import CONFIG_LOADER_ARGS

#: Where the package's own project is, for an editable install.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def is_project(folder: Path) -> bool:
    """A Kedro project folder: ``conf/base`` and a ``pyproject.toml`` for Kedro."""
    pyproject = folder / "pyproject.toml"
    return (
        (folder / "conf" / "base").is_dir()
        and pyproject.is_file()
        and "[tool.kedro]" in pyproject.read_text(errors="replace")
    )


def find_project(start: Path | None = None) -> Path:
    """The project holding ``start`` (default: the working directory) or one of
    its parents; else the project this package was installed from (editable).

    Raises
    ------
    FileNotFoundError
        Neither is a project; the message says what to pass instead.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if is_project(folder):
            return folder
    if is_project(PROJECT_ROOT):
        return PROJECT_ROOT
    raise FileNotFoundError(
        f"no pvg_pipeline project (conf/base and a pyproject.toml with [tool.kedro]) "
        f"in {here} or its parents; run from the project folder or pass "
        "project_path="
    )


def load_parameters(
    env: str = "base", conf_source: Path | None = None
) -> dict[str, Any]:
    """Parameters of ``base`` + ``env``, merged exactly as ``kedro run --env`` does
    (``conf_source`` defaults to the :func:`find_project`'s ``conf``)."""
    with warnings.catch_warnings():
        # OmegaConf 2.4 warns about kedro's resolver registration on every load.
        warnings.filterwarnings("ignore", "register_new_resolver", UserWarning)
        loader = ProjectConfigLoader(
            conf_source=str(conf_source or find_project() / "conf"),
            **{**CONFIG_LOADER_ARGS, "default_run_env": env},
        )
        return dict(loader["parameters"])
