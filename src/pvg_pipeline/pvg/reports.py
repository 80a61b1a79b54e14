"""Plots of evaluation results and run comparisons (matplotlib, no display)."""

from __future__ import annotations

import re

import pandas as pd
from matplotlib.figure import Figure


def evaluation_figure(
    breakdown: pd.DataFrame, history: pd.DataFrame, title: str = "Evaluation"
) -> Figure:
    """Accuracy by WL score (left, each bar with its number of pairs, and the
    accuracy of guessing) and training curves (right)."""
    figure = Figure(figsize=(11, 4), layout="constrained")
    figure.suptitle(title)
    by_score, curves = figure.subplots(1, 2)
    scores = breakdown[breakdown["grouping"] == "wl_score"]
    labels = ["iso" if g == -1 else str(g) for g in scores["group"]]
    bars = by_score.bar(labels, scores["accuracy"], color="tab:blue")
    if "pairs" in scores:
        # A bar of 3 pairs says less than one of 300: show how many each holds.
        by_score.bar_label(
            bars, [f"n={int(n)}" for n in scores["pairs"]], fontsize="small"
        )
    by_score.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    by_score.legend(loc="lower right", fontsize="small")
    by_score.set_ylim(0, 1.08)
    by_score.set_xlabel("WL score (iso = isomorphic pairs)")
    by_score.set_ylabel("verifier accuracy (fraction of pairs)")
    by_score.set_title("Accuracy by WL score (test split)")
    for column in [
        c for c in history.columns if c in _CURVES or c.startswith("test_accuracy_")
    ]:
        curves.plot(history["iteration"], history[column], label=column)
    curves.set_xlabel("iteration")
    curves.set_ylabel("accuracy / mean reward per episode")
    curves.set_title("Training")
    if curves.lines:
        curves.legend(fontsize="small")
    return figure


_CURVES = ("verifier_accuracy", "reward_verifier", "reward_prover")


def run_label(run: pd.Series) -> str:
    """What tells one evaluated run from another: protocol, trainer, seed,
    environment and the evaluation's version (a sweep trial's id)."""
    lines = [f"{run.get('protocol')} {run.get('trainer')}", f"seed {run.get('seed')}"]
    environment = run.get("environment")
    if isinstance(environment, str) and environment:
        lines[1] += f", {environment}"
    version = str(run.get("evaluation_version") or "")
    if version:
        # Kedro's version names are save times: the day and minute are enough.
        lines.append(version[5:16] if VERSION_TIME.match(version) else version)
    return "\n".join(lines)


#: A Kedro version name (the UTC time of the save).
VERSION_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}\.\d{2}\.\d{2}\.\d{3}Z$")


def comparison_figure(
    runs: pd.DataFrame, title: str = "Evaluated runs (test split)"
) -> Figure:
    """Accuracy, completeness and soundness of every evaluated run."""
    figure = Figure(figsize=(max(7, 1.3 * len(runs) + 4), 4.5), layout="constrained")
    axes = figure.subplots()
    if len(runs):
        labels = [run_label(run) for _, run in runs.iterrows()]
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
    axes.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    # Beside the axes, never over the first bars.
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    axes.set_ylim(0, 1)
    axes.set_ylabel("fraction of test pairs")
    axes.set_title(title)
    return figure


#: Periodic test-split evaluations recorded in a training history.
TEST_CURVES = {
    "Test split": {
        "test_accuracy": "accuracy",
        "test_completeness": "completeness",
        "test_soundness": "soundness",
        "test_hard_balanced_accuracy": "hard balanced accuracy",
    },
    "Test accuracy by pair kind": {
        "test_accuracy_isomorphic": "isomorphic",
        "test_accuracy_wl1": "WL score 1",
        "test_accuracy_wl2": "WL score 2",
        "test_accuracy_wl3plus": "WL score ≥ 3",
    },
}

#: Per-agent PPO diagnostics: column prefix -> panel title.
AGENT_DIAGNOSTICS = {
    "approx_kl_": "Approximate KL divergence",
    "clip_fraction_": "Clip fraction",
    "explained_variance_": "Explained variance (value head)",
    "entropy_": "Policy entropy",
}


def progress_column(history: pd.DataFrame) -> str | None:
    """``iteration`` (PPO) or ``epoch`` (supervised solo trainer), if recorded."""
    return next((c for c in ("iteration", "epoch") if c in history.columns), None)


def training_curves_figure(history: pd.DataFrame, title: str = "Training") -> Figure:
    """Test-split curves and per-agent PPO diagnostics over training.

    Parameters
    ----------
    history
        One row per iteration (or epoch); the ``test_*`` columns are filled only
        on the rows of a periodic evaluation. Missing columns leave their panel
        empty with a note, so histories of older runs still plot.
    title
        Figure title, e.g. naming the protocol and seed.
    """
    figure = Figure(figsize=(15, 8), layout="constrained")
    figure.suptitle(title)
    axes = figure.subplots(2, 3).ravel()
    x = progress_column(history)
    x_label = x or "row"
    steps = history[x] if x else pd.Series(range(len(history)), dtype=float)
    panels: list[tuple[str, dict[str, str], str]] = [
        (panel, columns, "test-split value") for panel, columns in TEST_CURVES.items()
    ]
    for prefix, panel in AGENT_DIAGNOSTICS.items():
        columns = {
            c: f"{c.removeprefix(prefix)}"
            for c in history.columns
            if c.startswith(prefix)
        }
        panels.append((panel, columns, panel.split(" (")[0].lower()))
    for axis, (panel, columns, y_label) in zip(axes, panels, strict=True):
        for column, label in columns.items():
            if column not in history.columns:
                continue
            values = pd.to_numeric(history[column], errors="coerce")
            recorded = values.notna()
            if recorded.any():
                # Periodic evaluations are sparse: markers show where they were made.
                sparse = recorded.sum() < len(values)
                axis.plot(
                    steps[recorded],
                    values[recorded],
                    marker="o" if sparse else None,
                    markersize=3,
                    label=label,
                )
        if panel in TEST_CURVES:
            axis.set_ylim(0, 1.02)
        axis.set_title(panel)
        axis.set_xlabel(x_label)
        axis.set_ylabel(y_label)
        if axis.lines:
            axis.legend(fontsize="small")
        else:
            axis.text(
                0.5,
                0.5,
                "not recorded",
                ha="center",
                va="center",
                transform=axis.transAxes,
                color="grey",
            )
    return figure


#: Line colour of each group (pvg or one of its controls) in learning-curve plots.
GROUP_COLOURS = {
    "pvg": "tab:blue",
    "random_prover": "tab:orange",
    "solo_ppo": "tab:green",
    "solo_supervised": "tab:purple",
}

_LEARNING_PANELS = {
    "test_accuracy": ("Test accuracy", "test accuracy"),
    "test_hard_balanced_accuracy": (
        "Hard balanced accuracy",
        "hard balanced accuracy\n(mean of isomorphic and WL ≥ 3 accuracy)",
    ),
}


def learning_curves_figure(
    curves: list[tuple[str, str, pd.DataFrame]],
    target: float = 0.8,
    chance: float = 0.5,
    title: str = "Learning curves (test split)",
) -> Figure:
    """Test accuracy and hard balanced accuracy of every trial over training.

    Parameters
    ----------
    curves
        ``(label, group, evaluations)`` per trial; the group (``pvg`` or a
        control) sets the colour and the legend entry. ``evaluations`` has a
        progress column (``iteration``, or ``epoch`` for the supervised solo
        trainer, drawn dashed against a top axis of its own) and
        ``test_accuracy`` and/or ``test_hard_balanced_accuracy``.
    target, chance
        Horizontal reference lines: the accuracy aimed at, and guessing.
    title
        Figure title.
    """
    figure = Figure(figsize=(14, 5.5), layout="constrained")
    figure.suptitle(title)
    axes = figure.subplots(1, 2, sharey=True)
    for axis, (column, (panel, y_label)) in zip(
        axes, _LEARNING_PANELS.items(), strict=True
    ):
        # Reference lines below the curves, so that a curve on them stays visible.
        axis.axhline(target, color="black", linestyle=":", linewidth=1, zorder=1)
        axis.axhline(chance, color="grey", linestyle="-.", linewidth=1, zorder=1)
        axis.lines[0].set_label(f"target {target:.2f}")
        axis.lines[1].set_label(f"chance {chance:.1f}")
        by_epoch = None
        seen: set[str] = set()
        for label, group, frame in curves:
            x = progress_column(frame)
            if x is None or column not in frame.columns:
                continue
            values = pd.to_numeric(frame[column], errors="coerce")
            recorded = values.notna()
            if not recorded.any():
                continue
            drawn_on = axis
            if x == "epoch":
                # Epochs of supervised training are not PPO iterations.
                if by_epoch is None:
                    by_epoch = axis.twiny()
                drawn_on = by_epoch
            drawn_on.plot(
                frame[x][recorded],
                values[recorded],
                color=GROUP_COLOURS.get(group, "tab:grey"),
                linestyle="--" if x == "epoch" else "-",
                alpha=0.8,
                linewidth=1.2,
                # One legend entry per group; matplotlib hides labels starting "_".
                label=group if group not in seen else f"_{label}",
            )
            seen.add(group)
        axis.set_ylim(0, 1.02)
        axis.set_xlabel("PPO iteration")
        axis.set_ylabel(y_label)
        axis.set_title(panel)
        handles, labels = axis.get_legend_handles_labels()
        if by_epoch is not None:
            by_epoch.set_xlabel("epoch (solo_supervised, dashed)")
            more_handles, more_labels = by_epoch.get_legend_handles_labels()
            handles, labels = handles + more_handles, labels + more_labels
        axis.legend(handles, labels, fontsize="small", loc="lower right")
    return figure
