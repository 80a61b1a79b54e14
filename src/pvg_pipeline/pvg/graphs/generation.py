"""Generation of graph-isomorphism datasets: pairs bucketed by WL score.

For every (size, edge probability) configuration the generator draws:

* non-isomorphic pairs split into WL-score buckets (by default 10 % score 1, 20 %
  score 2, 70 % score >= 3; the last bucket is open-ended). Pairs whose WL score is
  ``-1`` (isomorphic, or non-isomorphic but WL-indistinguishable) are discarded.
* isomorphic pairs, half copied from a graph of the configuration's non-isomorphic
  pairs and half fresh G(n, p) graphs; both graphs of every isomorphic pair get an
  independent node permutation.

Scores >= 2 need equal degree sequences (round 1 of WL), and high scores are rare
among independent pairs (about 1 in 10^5 for 11 nodes at p = 0.4). Instead of
rejection, each graph of a pool is refined once on its own (the colour hash does
not depend on the graph), graphs are grouped by their colour multiset after each
round, and pairs are drawn uniformly among the pool's pairs that agree up to round
``k - 1`` and differ at round ``k``: the law of independent pairs conditioned on
their score bucket, without scoring the pairs that are rejected. Each graph is used
at most once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int64
from torch import Tensor
from tqdm.auto import tqdm

from pvg_pipeline.pvg.graphs.sampling import permute_nodes, sample_erdos_renyi
from pvg_pipeline.pvg.graphs.weisfeiler_lehman import (
    colour_multisets,
    multiset_keys,
    scores_from_multisets,
)


class GenerationError(RuntimeError):
    """Raised when a WL-score bucket cannot be filled within the draw budget."""


@dataclass(frozen=True)
class GenerationSpec:
    """Everything that determines a generated split.

    ``wl_score_proportions`` maps a WL score to its share of the non-isomorphic
    pairs; the largest key is open-ended (``3`` means ``>= 3``).
    """

    num_pairs: int
    seed: int
    graph_sizes: Sequence[int]
    edge_probabilities: Sequence[float]
    max_nodes: int
    wl_max_iterations: int
    non_isomorphic_fraction: float
    wl_score_proportions: dict[int, float]
    isomorphic_copied_fraction: float
    pool_size: int
    max_pool_draws: int


@dataclass
class GenerationStats:
    """Work counters of a generation run (for benchmarks and progress)."""

    pools: int = 0
    graphs_refined: int = 0
    candidate_pairs: int = 0


def allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder).

    The parts always sum to ``total``; ties go to the earlier weight.
    """
    weight_sum = float(sum(weights))
    exact = [total * w / weight_sum for w in weights]
    parts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (parts[i] - exact[i], i))
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


def generate_graph_pairs(
    spec: GenerationSpec,
    prime_table: Int64[Tensor, "hash_size"],
    device: torch.device | str = "cpu",
    progress: bool = True,
    stats: GenerationStats | None = None,
) -> dict[str, Tensor]:
    """Generate one split of the graph-isomorphism dataset.

    Returns
    -------
    dict
        CPU tensors ``adjacency`` (``bool``, ``(pairs, 2, max_nodes, max_nodes)``),
        ``sizes``, ``edge_probabilities``, ``wl_scores`` (``-1`` for isomorphic
        pairs) and ``is_isomorphic``, in a seeded random order.

    Other Parameters
    ----------------
    stats
        When given, incremented with the pools drawn and candidate pairs scored.
    """
    stats = stats if stats is not None else GenerationStats()
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(spec.seed)
    prime_table = prime_table.to(device)
    configs = [(n, p) for n in spec.graph_sizes for p in spec.edge_probabilities]
    per_config = allocate(spec.num_pairs, [1.0] * len(configs))
    parts: list[dict[str, Tensor]] = []
    bar = tqdm(configs, desc=f"pairs (seed {spec.seed})", disable=not progress)
    for (n, p), count in zip(bar, per_config, strict=True):
        bar.set_postfix(n=n, p=p)
        parts.append(_generate_config(spec, n, p, count, prime_table, generator, stats))
    dataset = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
    order = torch.randperm(spec.num_pairs, generator=generator, device=device)
    return {key: value[order].cpu() for key, value in dataset.items()}


def _generate_config(
    spec: GenerationSpec,
    n: int,
    p: float,
    count: int,
    prime_table: Tensor,
    generator: torch.Generator,
    stats: GenerationStats,
) -> dict[str, Tensor]:
    num_non_iso, num_iso = allocate(
        count, [spec.non_isomorphic_fraction, 1 - spec.non_isomorphic_fraction]
    )
    scores = sorted(spec.wl_score_proportions)
    bucket_sizes = allocate(num_non_iso, [spec.wl_score_proportions[s] for s in scores])
    non_iso, non_iso_scores = _sample_non_isomorphic(
        spec,
        n,
        p,
        dict(zip(scores, bucket_sizes, strict=True)),
        prime_table,
        generator,
        stats,
    )
    iso = _sample_isomorphic(spec, n, p, num_iso, non_iso, generator)
    adjacency = torch.cat([non_iso, iso])
    device = adjacency.device
    return {
        "adjacency": adjacency,
        "sizes": torch.full((count,), n, dtype=torch.int64, device=device),
        "edge_probabilities": torch.full((count,), p, device=device),
        "wl_scores": torch.cat(
            [non_iso_scores, torch.full((num_iso,), -1, device=device)]
        ),
        "is_isomorphic": torch.arange(count, device=device) >= num_non_iso,
    }


def _sample_non_isomorphic(
    spec: GenerationSpec,
    n: int,
    p: float,
    need: dict[int, int],
    prime_table: Tensor,
    generator: torch.Generator,
    stats: GenerationStats,
) -> tuple[Bool[Tensor, "pair 2 node node"], Int64[Tensor, "pair"]]:
    """Fill each WL bucket with non-isomorphic pairs of G(n, p) graphs.

    A pair has score ``k`` exactly when its graphs' colour multisets agree after
    round ``k - 1`` and differ after round ``k``. Each pool graph's multisets are
    computed once; candidate pairs are then drawn uniformly among the pool's pairs
    that agree at the coarse round and differ at the fine one.
    """
    device = generator.device
    open_bucket = max(need)
    rounds = spec.wl_max_iterations
    found: dict[int, list[tuple[Tensor, Tensor]]] = {score: [] for score in need}
    have = dict.fromkeys(need, 0)
    pool_sizes = torch.full((spec.pool_size,), n, dtype=torch.int64, device=device)
    for _ in range(spec.max_pool_draws):
        missing = {s: need[s] - have[s] for s in need if need[s] > have[s]}
        if not missing:
            break
        pool = sample_erdos_renyi(spec.pool_size, n, p, spec.max_nodes, generator)
        multisets = colour_multisets(pool, pool_sizes, prime_table, rounds)
        keys = multiset_keys(multisets)
        level = [torch.zeros(spec.pool_size, dtype=torch.int64, device=device)]
        level += [
            torch.unique(keys[:, r], return_inverse=True)[1] for r in range(rounds)
        ]
        candidates, buckets = [], []
        for bucket, count in missing.items():
            fine = rounds if bucket == open_bucket else bucket
            pairs = sample_cross_pairs(
                level[bucket - 1], level[fine], 2 * count + 16, generator
            )
            candidates.append(pairs)
            buckets.append(torch.full((len(pairs),), bucket, device=device))
        pairs = torch.cat(candidates)
        bucket_of = torch.cat(buckets)
        keep = first_use_mask(pairs)
        stats.pools += 1
        stats.graphs_refined += spec.pool_size
        stats.candidate_pairs += len(pairs)
        score = scores_from_multisets(multisets[pairs[:, 0]], multisets[pairs[:, 1]])
        # Keys are hashes: re-check the exact score so a collision cannot mislabel.
        exact = torch.where(
            bucket_of == open_bucket, score >= bucket_of, score == bucket_of
        )
        for bucket, count in missing.items():
            usable = keep & exact & (bucket_of == bucket)
            chosen = usable.nonzero().squeeze(1)[:count]
            found[bucket].append((pool[pairs[chosen]], score[chosen]))
            have[bucket] += len(chosen)
    short = {s: need[s] - have[s] for s in need if need[s] > have[s]}
    if short:
        raise GenerationError(
            f"could not fill WL-score buckets for n={n}, p={p}: missing {short} "
            f"pairs after {spec.max_pool_draws} pools of {spec.pool_size} graphs; "
            "raise data_generation.max_pool_draws or pool_size, or lower the "
            "share of high WL scores"
        )
    ordered = [pair for s in sorted(need) for pair in found[s]]
    empty = torch.zeros(0, 2, spec.max_nodes, spec.max_nodes, dtype=torch.bool)
    adjacency = torch.cat([empty.to(device)] + [a for a, _ in ordered])
    scores = torch.zeros(0, dtype=torch.int64, device=device)
    scores = torch.cat([scores] + [s for _, s in ordered])
    return adjacency, scores


def sample_cross_pairs(
    coarse: Int64[Tensor, "graph"],
    fine: Int64[Tensor, "graph"],
    count: int,
    generator: torch.Generator,
) -> Int64[Tensor, "pair 2"]:
    """Draw ``count`` pairs uniformly from those equal in ``coarse``, not in ``fine``.

    Pairs ``(i, j)`` are drawn with replacement, uniformly over ordered pairs of
    distinct graphs with ``coarse[i] == coarse[j]`` and ``fine[i] != fine[j]``
    (``fine`` must refine ``coarse``). Returns an empty tensor when none exist.
    """
    device = coarse.device
    key = coarse * (int(fine.max()) + 1) + fine
    order = key.argsort(stable=True)
    coarse_start, coarse_size = _run_extent(coarse[order])
    fine_start, fine_size = _run_extent(key[order])
    weight = (coarse_size - fine_size).to(torch.float64)
    if weight.sum() == 0:
        return torch.zeros(0, 2, dtype=torch.int64, device=device)
    # First element with probability proportional to its number of partners, the
    # second uniformly among its partners: uniform over ordered pairs.
    first = torch.multinomial(weight, count, replacement=True, generator=generator)
    draw = torch.rand(count, generator=generator, device=device, dtype=torch.float64)
    offset = (draw * weight[first]).to(torch.int64)
    skip = offset >= fine_start[first] - coarse_start[first]
    second = coarse_start[first] + offset + torch.where(skip, fine_size[first], 0)
    return torch.stack([order[first], order[second]], dim=1)


def _run_extent(
    sorted_keys: Int64[Tensor, "graph"],
) -> tuple[Int64[Tensor, "graph"], Int64[Tensor, "graph"]]:
    """Start index and length of the run of equal keys each position belongs to."""
    _, inverse, counts = torch.unique_consecutive(
        sorted_keys, return_inverse=True, return_counts=True
    )
    starts = torch.cumsum(counts, 0) - counts
    return starts[inverse], counts[inverse]


def first_use_mask(pairs: Int64[Tensor, "pair 2"]) -> Bool[Tensor, "pair"]:
    """Keep a pair only if neither of its graphs appeared in an earlier pair."""
    flat = pairs.reshape(-1)
    position = torch.arange(len(flat), device=flat.device)
    _, inverse = torch.unique(flat, return_inverse=True)
    first = torch.full((len(flat),), len(flat), device=flat.device)
    first = first.scatter_reduce(0, inverse, position, reduce="amin")
    return (first[inverse] == position).view(-1, 2).all(dim=1)


def _sample_isomorphic(
    spec: GenerationSpec,
    n: int,
    p: float,
    count: int,
    non_iso: Bool[Tensor, "pair 2 node node"],
    generator: torch.Generator,
) -> Bool[Tensor, "pair 2 node node"]:
    """Isomorphic pairs: copies of non-iso graphs and fresh graphs, both permuted."""
    device = generator.device
    num_copied, num_fresh = allocate(
        count, [spec.isomorphic_copied_fraction, 1 - spec.isomorphic_copied_fraction]
    )
    if non_iso.shape[0] == 0:
        num_copied, num_fresh = 0, count
    source = non_iso.reshape(-1, spec.max_nodes, spec.max_nodes)
    pick = torch.randint(
        source.shape[0] or 1, (num_copied,), generator=generator, device=device
    )
    fresh = sample_erdos_renyi(num_fresh, n, p, spec.max_nodes, generator)
    graphs = torch.cat([source[pick], fresh])
    sizes = torch.full((count,), n, dtype=torch.int64, device=device)
    return torch.stack(
        [
            permute_nodes(graphs, sizes, generator),
            permute_nodes(graphs, sizes, generator),
        ],
        1,
    )
