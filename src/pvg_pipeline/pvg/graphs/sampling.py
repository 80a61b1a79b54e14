"""Batched Erdős–Rényi sampling and node permutations on dense, padded adjacency."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Int64
from torch import Tensor


def sample_erdos_renyi(
    count: int,
    num_nodes: int,
    edge_probability: float,
    max_nodes: int,
    generator: torch.Generator,
) -> Bool[Tensor, "count max_nodes max_nodes"]:
    """Draw ``count`` undirected G(n, p) graphs as zero-padded dense adjacency.

    Parameters
    ----------
    count
        Number of graphs.
    num_nodes
        Nodes per graph (``n``); nodes ``n..max_nodes-1`` are padding.
    edge_probability
        Independent probability of each of the ``n (n - 1) / 2`` edges.
    max_nodes
        Padded size of the adjacency matrices.
    generator
        Source of randomness; its device is where the graphs are made.

    Returns
    -------
    Tensor
        Symmetric boolean adjacency without self-loops.
    """
    device = generator.device
    upper = torch.triu(
        torch.ones(num_nodes, num_nodes, dtype=torch.bool, device=device), diagonal=1
    )
    draws = torch.rand(count, num_nodes, num_nodes, generator=generator, device=device)
    edges = (draws < edge_probability) & upper
    edges = edges | edges.transpose(1, 2)
    adjacency = torch.zeros(
        count, max_nodes, max_nodes, dtype=torch.bool, device=device
    )
    adjacency[:, :num_nodes, :num_nodes] = edges
    return adjacency


def permute_nodes(
    adjacency: Bool[Tensor, "count max_nodes max_nodes"],
    sizes: Int64[Tensor, "count"],
    generator: torch.Generator,
) -> Bool[Tensor, "count max_nodes max_nodes"]:
    """Relabel the real nodes of each graph by an independent uniform permutation.

    Padding nodes (index ``>= size``) keep their positions, so padding stays at the
    end of the matrix.
    """
    count, max_nodes, _ = adjacency.shape
    device = adjacency.device
    index = torch.arange(max_nodes, device=device).expand(count, max_nodes)
    is_real = index < sizes[:, None]
    # Random keys for real nodes, +inf-like keys for padding: argsort then shuffles the
    # real nodes among themselves and leaves padding in place.
    keys = torch.rand(count, max_nodes, generator=generator, device=device)
    keys = torch.where(is_real, keys, 2.0 + index.to(keys.dtype))
    perm = keys.argsort(dim=1)
    rows = torch.arange(count, device=device)[:, None, None]
    return adjacency[rows, perm[:, :, None], perm[:, None, :]]
