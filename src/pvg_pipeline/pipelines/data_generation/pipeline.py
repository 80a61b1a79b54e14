"""Wiring of the ``data_generation`` pipeline."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from pvg_pipeline.pipelines.data_generation.nodes import (
    make_graph_pairs,
    make_prime_table,
    summarise_graph_pairs,
)


def create_pipeline(**kwargs: object) -> Pipeline:
    """Prime table, train/test graph pairs (different seeds), and their summary."""
    return Pipeline(
        [
            node(
                make_prime_table,
                inputs="params:data_generation",
                outputs="prime_table",
                name="make_prime_table",
            ),
            *[
                node(
                    make_graph_pairs,
                    inputs=[
                        "prime_table",
                        "params:data_generation",
                        f"params:data_generation.{split}",
                        "params:device",
                        "params:environment",
                    ],
                    outputs=f"graph_pairs_{split}",
                    name=f"make_graph_pairs_{split}",
                )
                for split in ("train", "test")
            ],
            node(
                summarise_graph_pairs,
                inputs=["graph_pairs_train", "graph_pairs_test"],
                outputs=["graph_pairs_summary", "wl_score_distribution_plot"],
                name="summarise_graph_pairs",
            ),
        ],
        tags=["data_generation"],
    )
