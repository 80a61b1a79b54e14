"""Nodes of the ``compare`` pipeline."""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from pvg_pipeline.pvg.reports import comparison_figure

COLUMNS = [
    "evaluation_version",
    "protocol",
    "trainer",
    "seed",
    "environment",
    "agents_version",
    "dataset_version",
    "pairs",
    "accuracy",
    "completeness",
    "soundness",
    "timeout_rate",
    "mean_rounds",
]


def compare_runs(
    evaluation_metrics_versions: dict[str, dict[str, Any]],
) -> tuple[pd.DataFrame, Figure]:
    """One row per saved ``evaluation_metrics`` version, and a bar chart."""
    rows = []
    for version, metrics in sorted(evaluation_metrics_versions.items()):
        source = metrics.get("versions", {})
        rows.append(
            {
                **{key: metrics.get(key) for key in COLUMNS},
                "evaluation_version": version,
                "agents_version": source.get("agents"),
                "dataset_version": source.get("graph_pairs_test"),
            }
        )
    runs = pd.DataFrame(rows, columns=COLUMNS)
    return runs, comparison_figure(runs)
