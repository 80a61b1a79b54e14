"""Kedro hooks: validate all parameters before any node runs."""

from __future__ import annotations

from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io import CatalogProtocol
from kedro.pipeline import Pipeline

from pvg_pipeline.params import ProjectParameters, parse_parameters


class ParameterValidationHook:
    """Fail fast on bad parameters: unknown keys, wrong types, out-of-range values."""

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: CatalogProtocol
    ) -> None:
        """Validate the resolved parameter tree of the run."""
        parse_parameters(ProjectParameters, catalog.load("parameters"))
