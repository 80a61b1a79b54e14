"""The graph-pair generator: correctness of labels, proportions, determinism."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import networkx as nx
import pytest
import torch

from pvg_pipeline.pvg.graphs.generation import (
    GenerationError,
    GenerationSpec,
    allocate,
    first_use_mask,
    generate_graph_pairs,
    sample_cross_pairs,
)
from pvg_pipeline.pvg.graphs.sampling import permute_nodes, sample_erdos_renyi
from tests.pvg.graphs.reference import reference_wl_score, to_networkx

SPEC = GenerationSpec(
    num_pairs=400,
    seed=11,
    graph_sizes=[7, 9, 11],
    edge_probabilities=[0.2, 0.6],
    max_nodes=11,
    wl_max_iterations=5,
    non_isomorphic_fraction=0.5,
    wl_score_proportions={1: 0.1, 2: 0.2, 3: 0.7},
    isomorphic_copied_fraction=0.5,
    pool_size=20_000,
    max_pool_draws=100,
)


@pytest.fixture(scope="module")
def dataset(prime_table):
    return generate_graph_pairs(SPEC, prime_table, progress=False)


def test_catalog_contract_shapes_and_dtypes(dataset):
    assert dataset["adjacency"].shape == (400, 2, 11, 11)
    assert dataset["adjacency"].dtype == torch.bool
    for key in ("sizes", "wl_scores", "is_isomorphic", "edge_probabilities"):
        assert dataset[key].shape == (400,)
    assert dataset["is_isomorphic"].dtype == torch.bool
    adjacency = dataset["adjacency"]
    assert torch.equal(adjacency, adjacency.transpose(-1, -2))
    assert not adjacency.diagonal(dim1=-2, dim2=-1).any()
    # Padding rows and columns are empty.
    index = torch.arange(11)
    padding = index[None, :] >= dataset["sizes"][:, None]
    assert not (adjacency.any(dim=-1) & padding[:, None, :]).any()


def test_labels_agree_with_networkx_and_exact_wl(dataset):
    for i in range(len(dataset["sizes"])):
        n = int(dataset["sizes"][i])
        first = to_networkx(dataset["adjacency"][i, 0], n)
        second = to_networkx(dataset["adjacency"][i, 1], n)
        assert nx.is_isomorphic(first, second) == bool(dataset["is_isomorphic"][i])
        assert reference_wl_score(first, second, 5) == int(dataset["wl_scores"][i])


def test_proportions_per_configuration(dataset):
    configs = Counter(
        zip(
            dataset["sizes"].tolist(),
            dataset["edge_probabilities"].tolist(),
            strict=True,
        )
    )
    assert len(configs) == 6
    assert set(configs.values()) == {400 // 6, 400 // 6 + 1}
    for (n, p), count in configs.items():
        rows = (dataset["sizes"] == n) & (dataset["edge_probabilities"] == p)
        non_iso, iso = allocate(count, [0.5, 0.5])
        assert int(dataset["is_isomorphic"][rows].sum()) == iso
        scores = dataset["wl_scores"][rows & ~dataset["is_isomorphic"]]
        expected = allocate(non_iso, [0.1, 0.2, 0.7])
        observed = [
            int((scores == 1).sum()),
            int((scores == 2).sum()),
            int((scores >= 3).sum()),
        ]
        assert observed == expected, (n, p)
        assert not (scores == -1).any()


def test_isomorphic_pairs_are_permuted_not_copied(dataset):
    iso = dataset["adjacency"][dataset["is_isomorphic"]]
    identical = (iso[:, 0] == iso[:, 1]).all(dim=(-1, -2))
    # Independent permutations make identical matrices the exception.
    assert identical.float().mean() < 0.3


def test_same_seed_same_tensors_and_different_seed_different(prime_table, dataset):
    again = generate_graph_pairs(SPEC, prime_table, progress=False)
    for key, value in dataset.items():
        assert torch.equal(value, again[key]), key
    other = generate_graph_pairs(replace(SPEC, seed=12), prime_table, progress=False)
    assert not torch.equal(dataset["adjacency"], other["adjacency"])


def test_impossible_bucket_raises_a_clear_error(prime_table):
    # On 3 nodes no non-isomorphic pair needs 3 WL rounds.
    spec = replace(
        SPEC,
        num_pairs=20,
        graph_sizes=[3],
        edge_probabilities=[0.5],
        max_nodes=3,
        pool_size=500,
        max_pool_draws=3,
    )
    with pytest.raises(GenerationError, match=r"n=3, p=0.5.*max_pool_draws"):
        generate_graph_pairs(spec, prime_table, progress=False)


def test_cross_pairs_are_uniform_over_eligible_pairs():
    # Coarse groups {0,1,2,3} and {4,5}; fine splits {0,1} | {2} | {3} and {4} | {5}.
    coarse = torch.tensor([0, 0, 0, 0, 1, 1])
    fine = torch.tensor([0, 0, 1, 2, 3, 4])
    generator = torch.Generator().manual_seed(0)
    pairs = sample_cross_pairs(coarse, fine, 60_000, generator)
    assert (coarse[pairs[:, 0]] == coarse[pairs[:, 1]]).all()
    assert (fine[pairs[:, 0]] != fine[pairs[:, 1]]).all()
    counts = Counter(map(tuple, pairs.tolist()))
    eligible = {
        (i, j)
        for i in range(6)
        for j in range(6)
        if coarse[i] == coarse[j] and fine[i] != fine[j]
    }
    assert set(counts) == eligible  # 12 ordered pairs
    expected = 60_000 / len(eligible)
    assert all(abs(c - expected) < 0.1 * expected for c in counts.values())


def test_cross_pairs_empty_when_none_exist():
    pairs = sample_cross_pairs(
        torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), 10, torch.Generator()
    )
    assert pairs.shape == (0, 2)


def test_first_use_mask_drops_pairs_reusing_a_graph():
    pairs = torch.tensor([[0, 1], [2, 3], [1, 4], [5, 5], [6, 7]])
    assert first_use_mask(pairs).tolist() == [True, True, False, False, True]


def test_allocate_sums_to_total():
    assert allocate(10, [0.1, 0.2, 0.7]) == [1, 2, 7]
    assert allocate(7, [1, 1, 1]) == [3, 2, 2]
    assert sum(allocate(333, [0.15, 0.35, 0.5])) == 333


def test_permutation_keeps_padding_and_isomorphism():
    generator = torch.Generator().manual_seed(1)
    graphs = sample_erdos_renyi(50, 6, 0.5, 9, generator)
    sizes = torch.full((50,), 6)
    permuted = permute_nodes(graphs, sizes, generator)
    assert not permuted[:, 6:].any() and not permuted[:, :, 6:].any()
    for a, b in zip(graphs, permuted, strict=True):
        assert nx.is_isomorphic(to_networkx(a, 6), to_networkx(b, 6))
    assert not torch.equal(graphs, permuted)


def test_erdos_renyi_edge_density():
    generator = torch.Generator().manual_seed(2)
    graphs = sample_erdos_renyi(2_000, 10, 0.3, 10, generator)
    density = graphs.sum() / (2_000 * 10 * 9)
    assert abs(float(density) - 0.3) < 0.01
