"""Nodes of the ``data_generation`` pipeline: thin adapters over ``pvg.graphs``."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from pvg_pipeline.params import DataGenerationParams, SplitParams, parse_parameters
from pvg_pipeline.pvg.device import resolve_device
from pvg_pipeline.pvg.graphs.generation import generate_graph_pairs
from pvg_pipeline.pvg.graphs.primes import first_primes
from pvg_pipeline.pvg.graphs.summary import count_pairs, plot_wl_score_distribution


def make_prime_table(data_generation: dict[str, Any]) -> torch.Tensor:
    """Compute the first ``hash_size`` primes (``int64``) for WL hashing."""
    params = parse_parameters(DataGenerationParams, data_generation, "data_generation")
    return first_primes(params.hash_size)


def make_graph_pairs(
    prime_table: torch.Tensor,
    data_generation: dict[str, Any],
    split: dict[str, Any],
    device: str,
    environment: str = "base",
) -> dict[str, Any]:
    """Generate one split; the file also records the parameters that made it and
    the environment of the run."""
    params = parse_parameters(DataGenerationParams, data_generation, "data_generation")
    split_params = parse_parameters(SplitParams, split, "data_generation.<split>")
    spec = params.generation_spec(split_params)
    pairs = generate_graph_pairs(spec, prime_table, resolve_device(device))
    pairs["generation_parameters"] = {
        **params.model_dump(exclude={"train", "test"}),
        "max_nodes": params.padded_nodes,
        **split_params.model_dump(),
        "environment": environment,
    }
    return pairs


def summarise_graph_pairs(
    graph_pairs_train: dict[str, Any], graph_pairs_test: dict[str, Any]
) -> tuple[pd.DataFrame, Figure]:
    """Count pairs per split x size x edge probability x WL score, and plot them."""
    summary = count_pairs({"train": graph_pairs_train, "test": graph_pairs_test})
    return summary, plot_wl_score_distribution(summary)
