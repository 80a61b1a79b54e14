"""Wiring of the ``evaluate`` pipeline."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from pvg_pipeline.pipelines.evaluate.nodes import evaluate_agents, plot_evaluation


def create_pipeline(**kwargs: object) -> Pipeline:
    """Evaluate ``agents`` (latest unless pinned) on ``graph_pairs_test``."""
    return Pipeline(
        [
            node(
                evaluate_agents,
                inputs=[
                    "agents",
                    "graph_pairs_test",
                    "params:evaluation",
                    "params:experiment",
                ],
                outputs=[
                    "evaluation_metrics",
                    "evaluation_breakdown",
                    "evaluation_transcripts",
                ],
                name="evaluate_agents",
            ),
            node(
                plot_evaluation,
                inputs=["evaluation_breakdown", "agents"],
                outputs="evaluation_plots",
                name="plot_evaluation",
            ),
        ],
        tags=["evaluate"],
    )
