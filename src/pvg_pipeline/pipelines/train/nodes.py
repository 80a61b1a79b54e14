"""Nodes of the ``train`` pipeline: thin adapters over ``pvg.trainers``."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from pvg_pipeline import tracking
from pvg_pipeline.accelerate import accelerate
from pvg_pipeline.params import ProjectParameters, parse_parameters
from pvg_pipeline.pvg.device import resolve_device
from pvg_pipeline.pvg.errors import RunError
from pvg_pipeline.pvg.reports import training_curves_figure
from pvg_pipeline.pvg.trainers.ppo import PPOConfig
from pvg_pipeline.pvg.trainers.run import run_training
from pvg_pipeline.pvg.trainers.solo_agent import SoloAgentConfig

_PACKAGES = (
    "pvg_pipeline",
    "torch",
    "torchrl",
    "tensordict",
    "kedro",
    "numpy",
    "pydantic",
)


def train_agents(
    graph_pairs_train: dict[str, Any],
    graph_pairs_test: dict[str, Any],
    parameters: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Train the protocol's agents; return agents, history and the run record."""
    params = parse_parameters(ProjectParameters, parameters)
    check_dataset_matches(graph_pairs_train, params, "graph_pairs_train")
    check_dataset_matches(graph_pairs_test, params, "graph_pairs_test")
    trainer = params.trainer
    config = (
        PPOConfig(
            **trainer.ppo.model_dump(),
            checkpoint_interval=trainer.checkpoint_interval,
            eval_interval=trainer.eval_interval,
        )
        if trainer.name == "ppo"
        else SoloAgentConfig(**trainer.solo_agent.model_dump())
    )
    agents, history, info = run_training(
        trainer.name,
        config,
        params.protocol.build(),
        params.rewards.build(),
        params.agents.prover.spec(),
        params.agents.verifier.spec(),
        params.agents.shared_body,
        graph_pairs_train,
        graph_pairs_test,
        params.seed,
        resolve_device(params.device),
        trainer.checkpoint_dir,
        trainer.resume_run or trainer.resume,
        on_iteration=tracking.publish,
        accelerator=accelerate,
    )
    record = {
        "parameters": params.model_dump(mode="json"),
        "packages": {**package_versions(), "python": platform.python_version()},
        "datasets": {
            "graph_pairs_train": graph_pairs_train.get("generation_parameters", {}),
            "graph_pairs_test": graph_pairs_test.get("generation_parameters", {}),
        },
        **info,
    }
    agents["environment"] = params.environment
    return agents, pd.DataFrame(history), record


#: Tensors every graph-pair dataset holds, one row per pair.
PAIR_KEYS = ("adjacency", "sizes", "wl_scores", "is_isomorphic")


def check_dataset_matches(
    pairs: dict[str, Any], params: ProjectParameters, name: str
) -> None:
    """The dataset must hold graph pairs of the padded size the parameters describe.

    Raises
    ------
    DatasetMismatchError
        Missing keys, rows of different lengths, or another padded size.
    """
    missing = [key for key in PAIR_KEYS if key not in pairs]
    if missing:
        raise DatasetMismatchError(
            f"{name} is not a graph-pair dataset: it lacks {', '.join(missing)} "
            f"(it has {', '.join(map(str, pairs)) or 'nothing'}); regenerate it "
            "with kedro run --pipelines data_generation"
        )
    lengths = {key: len(pairs[key]) for key in PAIR_KEYS}
    if len(set(lengths.values())) > 1:
        raise DatasetMismatchError(
            f"{name} has tensors of different lengths "
            f"({', '.join(f'{k}: {v}' for k, v in lengths.items())}); it is "
            "corrupt: regenerate it or pin another version"
        )
    expected = params.data_generation.padded_nodes
    actual = int(pairs["adjacency"].shape[-1])
    if actual != expected:
        raise DatasetMismatchError(
            f"{name} has max_nodes={actual} but data_generation describes "
            f"max_nodes={expected}: it was generated with other parameters "
            "(another --env?); regenerate it with these (kedro run --pipelines "
            f"data_generation --env {params.environment}) or pin a matching version"
        )


class DatasetMismatchError(RunError, ValueError):
    """A dataset that does not fit the run's parameters."""


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that determine results."""
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def plot_training_curves(
    training_history: pd.DataFrame, training_run: dict[str, Any]
) -> Figure:
    """Test-split curves and PPO diagnostics of the run, titled with its setup."""
    parameters = training_run.get("parameters") or {}
    protocol = (parameters.get("protocol") or {}).get("name")
    trainer = (parameters.get("trainer") or {}).get("name")
    experiment = parameters.get("experiment") or {}
    parts = [
        f"protocol {protocol}" if protocol else None,
        f"trainer {trainer}" if trainer else None,
        f"seed {parameters['seed']}" if parameters.get("seed") is not None else None,
        (
            f"sweep {experiment['sweep']} trial {experiment.get('trial')}"
            if experiment.get("sweep")
            else None
        ),
    ]
    details = ", ".join(p for p in parts if p)
    title = f"Training curves ({details})" if details else "Training curves"
    return training_curves_figure(training_history, title)
