"""WL scores against an exact plain-Python colour refinement."""

from __future__ import annotations

import networkx as nx
import pytest
import torch

from pvg_pipeline.pvg.graphs.generation import sample_cross_pairs
from pvg_pipeline.pvg.graphs.primes import first_primes
from pvg_pipeline.pvg.graphs.sampling import permute_nodes, sample_erdos_renyi
from pvg_pipeline.pvg.graphs.weisfeiler_lehman import (
    colour_multisets,
    multiset_keys,
    refine_colours,
    wl_scores,
)
from tests.pvg.graphs.reference import reference_wl_score, to_networkx

MAX_NODES = 11


def _dense(graph: nx.Graph, max_nodes: int = MAX_NODES) -> torch.Tensor:
    adjacency = torch.zeros(max_nodes, max_nodes, dtype=torch.bool)
    for u, v in graph.edges:
        adjacency[u, v] = adjacency[v, u] = True
    return adjacency


def _hard_pairs(prime_table: torch.Tensor, seed: int) -> tuple[torch.Tensor, "int"]:
    """Pairs with equal colour multisets up to round 1 or 2: the rare, hard cases."""
    generator = torch.Generator().manual_seed(seed)
    n = 9
    pool = sample_erdos_renyi(20_000, n, 0.3, MAX_NODES, generator)
    sizes = torch.full((len(pool),), n)
    keys = multiset_keys(colour_multisets(pool, sizes, prime_table, 5))
    levels = [torch.zeros(len(pool), dtype=torch.int64)]
    levels += [torch.unique(keys[:, r], return_inverse=True)[1] for r in range(5)]
    pairs = [
        sample_cross_pairs(levels[1], levels[2], 200, generator),  # score 2
        sample_cross_pairs(levels[2], levels[5], 200, generator),  # score >= 3
    ]
    index = torch.cat(pairs)
    return pool[index], n


def test_scores_match_exact_refinement_on_random_and_hard_pairs(prime_table):
    generator = torch.Generator().manual_seed(7)
    cases: list[tuple[torch.Tensor, torch.Tensor]] = []
    for n in (5, 8, 11):
        for p in (0.2, 0.5, 0.8):
            graphs = sample_erdos_renyi(120, n, p, MAX_NODES, generator)
            cases.append(
                (graphs.view(60, 2, MAX_NODES, MAX_NODES), torch.full((60,), n))
            )
    hard, n = _hard_pairs(prime_table, seed=3)
    cases.append((hard, torch.full((len(hard),), n)))
    # Isomorphic copies: the score must be -1.
    iso = sample_erdos_renyi(100, 10, 0.5, MAX_NODES, generator)
    sizes = torch.full((100,), 10)
    iso_pairs = torch.stack([iso, permute_nodes(iso, sizes, generator)], 1)
    cases.append((iso_pairs, sizes))
    adjacency = torch.cat([a for a, _ in cases])
    sizes = torch.cat([s for _, s in cases])
    assert len(adjacency) >= 1_000

    scores = wl_scores(adjacency, sizes, prime_table, max_iterations=5, chunk_size=97)
    expected = [
        reference_wl_score(
            to_networkx(pair[0], int(size)), to_networkx(pair[1], int(size)), 5
        )
        for pair, size in zip(adjacency, sizes, strict=True)
    ]
    assert scores.tolist() == expected
    # The hard cases really are hard: all of scores 2..5 and -1 occur.
    assert {2, 3, -1} <= set(expected)
    assert any(s >= 3 for s in expected[-len(hard) - 100 : -100])


def test_known_pairs():
    primes = first_primes(2**16 - 1)
    cycle6 = nx.cycle_graph(6)
    two_triangles = nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))
    path = nx.path_graph(6)
    star = nx.star_graph(5)
    pairs = torch.stack(
        [
            torch.stack([_dense(cycle6), _dense(two_triangles)]),  # 2-regular: WL blind
            torch.stack([_dense(path), _dense(star)]),  # degrees differ
            torch.stack([_dense(path), _dense(path)]),
        ]
    )
    scores = wl_scores(pairs, torch.tensor([6, 6, 6]), primes, max_iterations=5)
    assert scores.tolist() == [-1, 1, -1]


def test_neighbour_hash_reduces_modulo_at_every_multiplication(prime_table):
    """A hub with 10 neighbours of large-prime colours: int64 would wrap without it."""
    hash_size = prime_table.shape[0]
    adjacency = torch.zeros(1, MAX_NODES, MAX_NODES, dtype=torch.bool)
    adjacency[0, 0, 1:] = adjacency[0, 1:, 0] = True
    colours = torch.randint(hash_size - 1000, hash_size, (1, MAX_NODES))
    refined = refine_colours(adjacency, colours, prime_table)
    product = 1
    for u in range(1, MAX_NODES):
        product = product * int(prime_table[colours[0, u]]) % hash_size
    assert int(refined[0, 0]) == (int(colours[0, 0]) * 1_000_003 + product) % hash_size
    # Without the per-step reduction the exact product exceeds int64.
    exact = 1
    for u in range(1, MAX_NODES):
        exact *= int(prime_table[colours[0, u]])
    assert exact > 2**63


@pytest.mark.parametrize("max_iterations", [0, -1])
def test_rejects_non_positive_iterations(prime_table, max_iterations):
    with pytest.raises(ValueError, match="max_iterations"):
        wl_scores(
            torch.zeros(1, 2, 3, 3, dtype=torch.bool),
            torch.tensor([3]),
            prime_table,
            max_iterations,
        )
