"""Wiring of the ``train`` pipeline."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from pvg_pipeline.pipelines.train.nodes import plot_training_curves, train_agents


def create_pipeline(**kwargs: object) -> Pipeline:
    """Train on ``graph_pairs_train`` (reused, never regenerated here)."""
    return Pipeline(
        [
            node(
                train_agents,
                inputs=["graph_pairs_train", "graph_pairs_test", "parameters"],
                outputs=["agents", "training_history", "training_run"],
                name="train_agents",
            ),
            node(
                plot_training_curves,
                inputs=["training_history", "training_run"],
                outputs="training_curves_plot",
                name="plot_training_curves",
            ),
        ],
        tags=["train"],
    )
