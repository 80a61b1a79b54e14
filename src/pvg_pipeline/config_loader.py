"""Kedro's configuration loader, plus the run's environment as a value.

``${run_env:}`` in a configuration file is the environment the run uses: the name
given with ``--env``, or ``base`` without one. ``conf/base/parameters.yml`` sets
``environment: ${run_env:}``, so every run records which experiment it belongs to
(in its parameters, ``training_run``, the agents and the evaluation metrics).
"""

from __future__ import annotations

from typing import Any

from kedro.config import OmegaConfigLoader
from omegaconf import OmegaConf

#: Kedro's run environment when no ``--env`` is given; its runs record ``base``.
KEDRO_DEFAULT_ENV = "local"


def run_environment(env: str | None) -> str:
    """The name a run's environment is recorded under: ``--env``, or ``base``."""
    return "base" if not env or env == KEDRO_DEFAULT_ENV else env


class ProjectConfigLoader(OmegaConfigLoader):
    """:class:`OmegaConfigLoader` with the ``run_env`` resolver."""

    def __getitem__(self, key: str) -> dict[str, Any]:
        # Resolvers are global to OmegaConf: bind this loader's before resolving.
        environment = run_environment(self.env or self.default_run_env)
        OmegaConf.register_new_resolver(
            "run_env", lambda: environment, replace=True, use_cache=False
        )
        return super().__getitem__(key)
