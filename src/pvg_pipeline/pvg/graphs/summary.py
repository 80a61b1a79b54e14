"""Summaries of generated graph-pair datasets."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from matplotlib.figure import Figure
from torch import Tensor


def count_pairs(splits: Mapping[str, Mapping[str, Tensor]]) -> pd.DataFrame:
    """Count pairs per split x graph size x edge probability x WL score.

    Isomorphic pairs have WL score ``-1``.
    """
    frames = []
    for split, pairs in splits.items():
        frames.append(
            pd.DataFrame(
                {
                    "split": split,
                    "graph_size": pairs["sizes"].numpy(),
                    "edge_probability": pairs["edge_probabilities"].numpy().round(6),
                    "wl_score": pairs["wl_scores"].numpy(),
                    "is_isomorphic": pairs["is_isomorphic"].numpy(),
                }
            )
        )
    keys = ["split", "graph_size", "edge_probability", "wl_score", "is_isomorphic"]
    table = pd.concat(frames).groupby(keys).size().rename("pairs").reset_index()
    return table.sort_values(keys, ignore_index=True)


def plot_wl_score_distribution(summary: pd.DataFrame) -> Figure:
    """Bar chart of the number of pairs per WL score, one group of bars per split."""
    counts = summary.pivot_table(
        index="wl_score", columns="split", values="pairs", aggfunc="sum", fill_value=0
    )
    counts.index = ["isomorphic" if s == -1 else f"score {s}" for s in counts.index]
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    counts.plot.bar(ax=axes, rot=0)
    axes.set_xlabel("WL score (first refinement round that separates the graphs)")
    axes.set_ylabel("pairs")
    axes.set_title("Graph pairs by WL score")
    return figure
