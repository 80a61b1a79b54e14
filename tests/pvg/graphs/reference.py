"""Plain-Python references the vectorised graph code is tested against."""

from __future__ import annotations

import networkx as nx
import torch


def to_networkx(adjacency: torch.Tensor, size: int) -> nx.Graph:
    """The graph on the first ``size`` nodes of a dense adjacency matrix."""
    graph = nx.Graph()
    graph.add_nodes_from(range(size))
    rows, cols = torch.nonzero(adjacency[:size, :size], as_tuple=True)
    graph.add_edges_from(
        (int(r), int(c)) for r, c in zip(rows, cols, strict=True) if r < c
    )
    return graph


def reference_wl_score(first: nx.Graph, second: nx.Graph, max_iterations: int) -> int:
    """Exact joint colour refinement: no hashing, colours are canonical tuples.

    Both graphs' signatures (own colour, sorted neighbour colours) are relabelled
    through one shared dictionary each round, so equal colours mean exactly equal
    refinement histories.
    """
    colours = [dict.fromkeys(g.nodes, 0) for g in (first, second)]
    for round_number in range(1, max_iterations + 1):
        signatures = [
            {v: (c[v], tuple(sorted(c[u] for u in g.neighbors(v)))) for v in g.nodes}
            for g, c in zip((first, second), colours, strict=True)
        ]
        palette = {
            s: i
            for i, s in enumerate(
                sorted({*signatures[0].values(), *signatures[1].values()})
            )
        }
        colours = [{v: palette[s] for v, s in sig.items()} for sig in signatures]
        if sorted(colours[0].values()) != sorted(colours[1].values()):
            return round_number
    return -1
