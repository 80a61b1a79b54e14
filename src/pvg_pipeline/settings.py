"""Kedro project settings."""

import warnings

from pvg_pipeline.config_loader import ProjectConfigLoader
from pvg_pipeline.hooks import (
    InputDatasetHook,
    LineageHook,
    ParameterValidationHook,
    ReportHook,
    TrackingHook,
)

# Kedro's config loader uses an OmegaConf API that OmegaConf deprecated: a warning
# about Kedro's code, repeated three times per command, that users cannot act on.
warnings.filterwarnings(
    "ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning
)

# Order matters: parameters first, then inputs, then tracking (nothing to track if
# the run is refused).
HOOKS = (
    ParameterValidationHook(),
    InputDatasetHook(),
    TrackingHook(),
    LineageHook(),
    ReportHook(),
)

CONFIG_LOADER_CLASS = ProjectConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment that overrides one key of a block keeps the block's other keys.
    "merge_strategy": {"parameters": "soft"},
}
