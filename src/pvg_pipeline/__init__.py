"""pvg_pipeline: prover-verifier games (neural interactive proofs) with Kedro."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("Parameters", "run_experiment", "ScenarioType", "TrainerType")


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the package (as Kedro does on every command) stays fast.
    if name in _API:
        from pvg_pipeline import api

        return getattr(api, name)
    raise AttributeError(f"module 'pvg_pipeline' has no attribute {name!r}")


__all__ = ["__version__", *_API]
