"""Batched 1-WL colour refinement and the WL score of graph pairs.

The WL score of a pair is the first refinement round (1-based) at which the two
graphs' colour multisets differ, or ``-1`` if they never differ within
``max_iterations`` rounds. Colours of both graphs are refined with the same hash, so
equal colours mean equal refinement histories (up to hash collisions, which the
``hash_size``-sized prime table makes rare).
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Int64
from torch import Tensor

#: Multiplier mixing a node's own colour with its neighbourhood hash. Any odd
#: constant coprime with typical hash sizes works; this one is prime.
_SELF_MIX = 1_000_003
#: Polynomial hash of sorted colour vectors: a 39-bit prime modulus and a base below
#: 2**24, so every intermediate product fits in int64.
_KEY_MODULUS = 549_755_813_881
_KEY_BASE = 16_777_213


def refine_colours(
    adjacency: Bool[Tensor, "*batch node node"],
    colours: Int64[Tensor, "*batch node"],
    prime_table: Int64[Tensor, "hash_size"],
) -> Int64[Tensor, "*batch node"]:
    """Run one 1-WL round: hash each node's colour with its neighbours' multiset.

    The neighbourhood multiset is hashed as the product of ``prime_table[colour]``
    over neighbours, reduced modulo ``hash_size`` after *every* multiplication so
    that no intermediate product overflows ``int64``.
    """
    hash_size = prime_table.shape[0]
    neighbour_primes = prime_table[colours]
    product = torch.ones_like(colours)
    for j in range(adjacency.shape[-1]):
        factor = torch.where(adjacency[..., j], neighbour_primes[..., j, None], 1)
        product = product * factor % hash_size
    return (colours * _SELF_MIX + product) % hash_size


def colour_multisets(
    adjacency: Bool[Tensor, "graph node node"],
    sizes: Int64[Tensor, "graph"],
    prime_table: Int64[Tensor, "hash_size"],
    max_iterations: int,
) -> Int64[Tensor, "graph round node"]:
    """Sorted 1-WL colours of each graph after rounds ``1..max_iterations``.

    The hash does not depend on the graph, so two graphs' multisets after round
    ``r`` are equal exactly when a joint refinement would find them equal. Padding
    nodes get the sentinel ``hash_size`` (above every colour) and sort last.
    """
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
    prime_table = prime_table.to(adjacency.device)
    hash_size = prime_table.shape[0]
    node_index = torch.arange(adjacency.shape[-1], device=adjacency.device)
    is_padding = node_index >= sizes[:, None]
    colours = torch.zeros(is_padding.shape, dtype=torch.int64, device=adjacency.device)
    rounds = []
    for _ in range(max_iterations):
        colours = refine_colours(adjacency, colours, prime_table)
        rounds.append(torch.where(is_padding, hash_size, colours).sort(dim=-1).values)
    return torch.stack(rounds, dim=1)


def scores_from_multisets(
    first: Int64[Tensor, "pair round node"], second: Int64[Tensor, "pair round node"]
) -> Int64[Tensor, "pair"]:
    """First round (1-based) where two graphs' colour multisets differ, else -1."""
    differ = (first != second).any(dim=-1)
    first_round = differ.to(torch.int64).argmax(dim=-1) + 1
    return torch.where(differ.any(dim=-1), first_round, -1)


def wl_scores(
    adjacency: Bool[Tensor, "pair 2 node node"],
    sizes: Int64[Tensor, "pair"],
    prime_table: Int64[Tensor, "hash_size"],
    max_iterations: int,
    chunk_size: int = 65_536,
) -> Int64[Tensor, "pair"]:
    """Compute the WL score of every pair; both graphs of a pair share a size.

    Parameters
    ----------
    adjacency
        Zero-padded boolean adjacency of both graphs of each pair.
    sizes
        Number of real nodes of each pair's graphs.
    prime_table
        The first ``hash_size`` primes (``int64``).
    max_iterations
        Number of refinement rounds to try (>= 1).
    chunk_size
        Pairs processed at once, bounding peak memory.

    Returns
    -------
    Tensor
        Scores in ``1..max_iterations``, or ``-1`` where the multisets never differ.
    """
    scores = [torch.empty(0, dtype=torch.int64, device=adjacency.device)]
    max_nodes = adjacency.shape[-1]
    for start in range(0, adjacency.shape[0], chunk_size):
        pairs = adjacency[start : start + chunk_size]
        pair_sizes = sizes[start : start + chunk_size].repeat_interleave(2)
        multisets = colour_multisets(
            pairs.reshape(-1, max_nodes, max_nodes),
            pair_sizes,
            prime_table,
            max_iterations,
        ).unflatten(0, (-1, 2))
        scores.append(scores_from_multisets(multisets[:, 0], multisets[:, 1]))
    return torch.cat(scores)


def multiset_keys(
    multisets: Int64[Tensor, "graph round node"],
) -> Int64[Tensor, "graph round"]:
    """Hash each sorted colour vector to one ``int64`` key (polynomial hash).

    Equal multisets always get equal keys; different ones collide with probability
    about ``1 / 5.5e11`` per pair, so callers that need exactness re-check with
    :func:`scores_from_multisets`.
    """
    key = torch.zeros(multisets.shape[:-1], dtype=torch.int64, device=multisets.device)
    for node in range(multisets.shape[-1]):
        # key < 2**39 and colours <= 2**24, so the product stays below 2**63.
        key = (key * _KEY_BASE + multisets[..., node]) % _KEY_MODULUS
    return key
