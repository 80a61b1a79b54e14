"""Load an environment's parameters outside a Kedro session (benchmarks, scripts)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader

from pvg_pipeline.settings import CONFIG_LOADER_ARGS

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def load_parameters(
    env: str = "base", conf_source: Path | None = None
) -> dict[str, Any]:
    """Parameters of ``base`` + ``env``, merged exactly as ``kedro run --env`` does."""
    with warnings.catch_warnings():
        # OmegaConf 2.4 warns about kedro's resolver registration on every load.
        warnings.filterwarnings("ignore", "register_new_resolver", UserWarning)
        loader = OmegaConfigLoader(
            conf_source=str(conf_source or PROJECT_ROOT / "conf"),
            **{**CONFIG_LOADER_ARGS, "default_run_env": env},
        )
        return dict(loader["parameters"])
