"""Plots of evaluation results and run comparisons (matplotlib, no display)."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure


def evaluation_figure(breakdown: pd.DataFrame, history: pd.DataFrame) -> Figure:
    """Accuracy by WL score (left) and training curves (right)."""
    figure = Figure(figsize=(11, 4), layout="constrained")
    by_score, curves = figure.subplots(1, 2)
    scores = breakdown[breakdown["grouping"] == "wl_score"]
    labels = ["iso" if g == -1 else str(g) for g in scores["group"]]
    by_score.bar(labels, scores["accuracy"], color="tab:blue")
    by_score.set_ylim(0, 1)
    by_score.set_xlabel("WL score (iso = isomorphic pairs)")
    by_score.set_ylabel("verifier accuracy")
    by_score.set_title("Accuracy by WL score (test split)")
    for column in [
        c for c in history.columns if c in _CURVES or c.startswith("test_accuracy_")
    ]:
        curves.plot(history["iteration"], history[column], label=column)
    curves.set_xlabel("iteration")
    curves.set_title("Training")
    if curves.lines:
        curves.legend(fontsize="small")
    return figure


_CURVES = ("verifier_accuracy", "reward_verifier", "reward_prover")


def comparison_figure(runs: pd.DataFrame) -> Figure:
    """Accuracy, completeness and soundness of every evaluated run."""
    figure = Figure(figsize=(max(6, 1.2 * len(runs) + 3), 4), layout="constrained")
    axes = figure.subplots()
    if len(runs):
        labels = [
            f"{p}\n{t}\nseed {s}"
            for p, t, s in zip(
                runs["protocol"], runs["trainer"], runs["seed"], strict=True
            )
        ]
        width = 0.27
        positions = range(len(runs))
        for offset, column in enumerate(("accuracy", "completeness", "soundness")):
            axes.bar(
                [x + (offset - 1) * width for x in positions],
                runs[column],
                width,
                label=column,
            )
        axes.set_xticks(list(positions), labels, fontsize="small")
        axes.legend()
    axes.set_ylim(0, 1)
    axes.set_title("Evaluated runs (test split)")
    return figure
