"""What the evaluation and comparison plots show."""

from __future__ import annotations

import pandas as pd

from pvg_pipeline.pvg.reports import comparison_figure, evaluation_figure, run_label


def _runs() -> pd.DataFrame:
    # Three different runs of the same protocol, trainer and seed.
    return pd.DataFrame(
        {
            "evaluation_version": [
                "2026-12-01T10.00.00.000Z",
                "2026-12-02T11.30.00.000Z",
                "t003-1a2b3c4d",
            ],
            "protocol": ["pvg"] * 3,
            "trainer": ["ppo"] * 3,
            "seed": [0] * 3,
            "environment": ["gi_ppo", "base", None],
            "accuracy": [0.9, 0.6, 0.7],
            "completeness": [0.9, 0.7, 0.6],
            "soundness": [0.9, 0.5, 0.8],
        }
    )


def test_runs_are_told_apart_and_the_legend_stays_off_the_bars():
    runs = _runs()
    labels = [run_label(run) for _, run in runs.iterrows()]
    assert labels == [
        "pvg ppo\nseed 0, gi_ppo\n12-01T10.00",
        "pvg ppo\nseed 0, base\n12-02T11.30",
        "pvg ppo\nseed 0\nt003-1a2b3c4d",
    ]
    figure = comparison_figure(runs, "Sweep learning (environment gi_ppo)")
    (axes,) = figure.axes
    assert axes.get_title() == "Sweep learning (environment gi_ppo)"
    assert [t.get_text() for t in axes.get_xticklabels()] == labels
    legend = axes.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        "chance",
        "accuracy",
        "completeness",
        "soundness",
    ]
    assert legend.get_bbox_to_anchor().x0 > axes.get_window_extent().x1 - 1
    assert axes.get_ylabel() == "fraction of test pairs"


def test_accuracy_by_wl_score_shows_how_many_pairs_each_bar_holds():
    breakdown = pd.DataFrame(
        {
            "grouping": ["wl_score"] * 3 + ["graph_size"],
            "group": [-1, 1, 3, 8],
            "pairs": [500, 297, 3, 800],
            "accuracy": [0.8, 1.0, 0.0, 0.9],
        }
    )
    history = pd.DataFrame({"iteration": [1, 2], "verifier_accuracy": [0.5, 0.6]})
    figure = evaluation_figure(breakdown, history, "pvg (ppo), seed 0, gi_ppo")
    by_score = figure.axes[0]
    counts = [t.get_text() for t in by_score.texts]
    assert counts == ["n=500", "n=297", "n=3"]
    assert [line.get_ydata()[0] for line in by_score.lines] == [0.5]  # chance
    assert "fraction of pairs" in by_score.get_ylabel()
    assert figure._suptitle.get_text() == "pvg (ppo), seed 0, gi_ppo"
