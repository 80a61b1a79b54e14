"""Python API for notebooks: ``Parameters`` and ``run_experiment``.

>>> from pvg_pipeline import Parameters, run_experiment, ScenarioType, TrainerType
>>> params = Parameters(ScenarioType.GRAPH_ISOMORPHISM, TrainerType.PPO, "test",
...                     protocol={"name": "debate"}, seed=3)
>>> result = run_experiment(params, device="cpu")        # doctest: +SKIP
>>> result["metrics"]["accuracy"]                         # doctest: +SKIP
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Any

from pvg_pipeline.config import find_project, load_parameters
from pvg_pipeline.params import ProjectParameters, merge_parameters, parse_parameters


class ScenarioType(StrEnum):
    """Tasks the agents can play."""

    GRAPH_ISOMORPHISM = "graph_isomorphism"


class TrainerType(StrEnum):
    """Ways to train the agents."""

    PPO = "ppo"
    SOLO_AGENT = "solo_agent"


class Parameters:
    """Validated parameters of one experiment, as ``kedro run`` would resolve them.

    Parameters
    ----------
    scenario
        ``"graph_isomorphism"`` (or :class:`ScenarioType`).
    trainer
        ``"ppo"`` or ``"solo_agent"`` (or :class:`TrainerType`).
    dataset
        The Kedro environment whose configuration (data included) is the starting
        point: ``"base"``, ``"test"``, ``"gi_ppo"``, ``"gi_solo_agent"``, or your own.
    **overrides
        Nested overrides, e.g. ``protocol={"name": "mnip"}, seed=3``.

    Raises
    ------
    ParameterError
        The same readable errors as ``kedro run`` for invalid values.
    """

    def __init__(
        self,
        scenario: str | ScenarioType,
        trainer: str | TrainerType,
        dataset: str = "base",
        **overrides: Any,
    ) -> None:
        self.env = dataset
        self.overrides = merge_parameters(
            {"scenario": ScenarioType(scenario).value},
            merge_parameters(
                {"trainer": {"name": TrainerType(trainer).value}}, overrides
            ),
        )
        self.resolved: ProjectParameters = parse_parameters(
            ProjectParameters,
            merge_parameters(load_parameters(dataset), self.overrides),
        )

    def __repr__(self) -> str:
        return f"Parameters(env={self.env!r}, overrides={self.overrides!r})"


def run_experiment(
    params: Parameters,
    device: str | None = None,
    use_wandb: bool = False,
    pipelines: list[str] | None = None,
    project_path: str | Path | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run the pipelines in a Kedro session with these parameters.

    ``project_path`` defaults to the project holding the working directory.
    Kedro's per-dataset and per-node INFO lines are shown only when ``verbose``;
    warnings, errors and progress bars always are.

    Returns
    -------
    dict
        ``version`` (the timestamp of every dataset this run saved) and ``metrics``
        (``evaluation_metrics`` when ``evaluate`` ran).
    """
    from pvg_pipeline.sweeps.trials import run_session

    runtime = dict(params.overrides)
    if device is not None:
        runtime = merge_parameters(runtime, {"device": device})
    if not use_wandb:
        runtime = merge_parameters(runtime, {"tracking": {"mode": "disabled"}})
    if not verbose:
        logging.disable(logging.INFO)
    try:
        return run_session(
            project_path or find_project(),
            params.env,
            runtime,
            pipelines or ["train", "evaluate"],
        )
    finally:
        if not verbose:
            logging.disable(logging.NOTSET)
