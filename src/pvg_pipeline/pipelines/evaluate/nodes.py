"""Nodes of the ``evaluate`` pipeline: thin adapters over ``pvg.evaluation``."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from pvg_pipeline.accelerate import accelerate
from pvg_pipeline.params import EvaluationParams, parse_parameters
from pvg_pipeline.pvg import evaluation, prover_ablation
from pvg_pipeline.pvg.message_statistics import message_statistics
from pvg_pipeline.pvg.protocols import VERIFIER, Protocol
from pvg_pipeline.pvg.reports import evaluation_figure
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import import_agents


def evaluate_agents(
    agents: dict[str, Any],
    graph_pairs_test: dict[str, Any],
    evaluation_params: dict,
    experiment: dict,
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Play (or classify) the whole test split; metrics, breakdown, transcripts.

    The metrics hold the summary and learning metrics, the provers' message
    statistics and, for PPO-trained agents with provers, the learning metrics of a
    replay against uniformly random provers (``random_prover_*``; NaN otherwise).
    """
    params = parse_parameters(EvaluationParams, evaluation_params, "evaluation")
    check_max_nodes(agents, graph_pairs_test)
    networks = import_agents(agents)
    accelerate(networks, torch.device("cpu"))  # evaluation plays on the CPU
    protocol = Protocol(**agents["protocol"])
    play = {
        "deterministic": params.deterministic,
        "batch_size": params.batch_size,
        "seed": params.seed,
    }
    solo = agents["trainer"] == "solo_agent"
    if solo:
        episodes = evaluation.classify_pairs(networks[VERIFIER], graph_pairs_test)
    else:
        episodes = evaluation.play_episodes(
            networks, protocol, graph_pairs_test, **play
        )
    # Solo classifiers never hear a prover: nothing to ablate.
    ablation = (
        prover_ablation.not_applicable()
        if solo
        else prover_ablation.random_prover_metrics(
            networks, protocol, graph_pairs_test, **play
        )
    )
    metrics = {
        **evaluation.summary_metrics(episodes),
        **evaluation.learning_metrics(episodes),
        **message_statistics(episodes, graph_pairs_test["adjacency"]),
        **ablation,
        "protocol": protocol.name,
        "trainer": agents["trainer"],
        "seed": agents.get("seed"),
        # Where the agents were trained (``None`` for agents saved before it was
        # recorded); the test split's own environment is in ``dataset``.
        "environment": agents.get("environment"),
        "deterministic": params.deterministic,
        "experiment": experiment,
        "dataset": graph_pairs_test.get("generation_parameters", {}),
    }
    return (
        metrics,
        evaluation.breakdown(episodes),
        evaluation.transcripts(episodes, params.num_transcripts, params.seed),
    )


def plot_evaluation(
    evaluation_breakdown: pd.DataFrame, agents: dict[str, Any]
) -> Figure:
    """Accuracy by WL score and the training curves of the evaluated agents."""
    history = pd.DataFrame(agents.get("training_history", []))
    if history.empty:
        history = pd.DataFrame({"iteration": []})
    protocol = (agents.get("protocol") or {}).get("name")
    title = (
        f"{protocol} ({agents.get('trainer')}), seed {agents.get('seed')}, "
        f"environment {agents.get('environment') or 'not recorded'}"
    )
    return evaluation_figure(evaluation_breakdown, history, title)


def check_max_nodes(agents: dict[str, Any], pairs: dict[str, Any]) -> None:
    """Agents only work on datasets padded to the size they were trained on."""
    actual = int(pairs["adjacency"].shape[-1])
    if agents["max_nodes"] != actual:
        raise ValueError(
            f"the agents were trained on graphs padded to {agents['max_nodes']} nodes "
            f"but graph_pairs_test has {actual}; evaluate them on a dataset generated "
            "with the same data_generation parameters"
        )
