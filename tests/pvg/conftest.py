"""A small generated dataset shared by the environment and agent tests."""

from __future__ import annotations

import pytest

from pvg_pipeline.pvg.graphs.generation import GenerationSpec, generate_graph_pairs


@pytest.fixture(scope="session")
def small_pairs(prime_table):
    spec = GenerationSpec(
        num_pairs=64,
        seed=5,
        graph_sizes=[6, 8],
        edge_probabilities=[0.4, 0.6],
        max_nodes=9,
        wl_max_iterations=5,
        non_isomorphic_fraction=0.5,
        wl_score_proportions={1: 0.5, 2: 0.5},
        isomorphic_copied_fraction=0.5,
        pool_size=5_000,
        max_pool_draws=50,
    )
    return generate_graph_pairs(spec, prime_table, progress=False)
