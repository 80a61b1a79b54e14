"""Wiring of the ``compare`` pipeline."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from pvg_pipeline.pipelines.compare.nodes import compare_runs


def create_pipeline(**kwargs: object) -> Pipeline:
    """Read every saved evaluation and tabulate the runs."""
    return Pipeline(
        [
            node(
                compare_runs,
                inputs="evaluation_metrics_versions",
                outputs=["runs_comparison", "runs_comparison_plot"],
                name="compare_runs",
            )
        ],
        tags=["compare"],
    )
