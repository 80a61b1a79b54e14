"""Which token sees which in the agents' cross-graph transformer.

Tokens are ``[2 pooled, N nodes of graph A, N nodes of graph B]``. A node sees the
other graph's real nodes and the pooled tokens; a pooled token sees both pooled
tokens and every real node; nobody sees a padding node (so every query sees at
least the pooled tokens). The mask therefore factors into a
static *structure* (token kinds, the same for every batch row) and the real keys of
each row. :class:`AttentionMask` keeps the two factors and builds, once per forward
pass and only when asked, the form a layer needs: a boolean mask for PyTorch's
attention, or the additive bias of the fused CPU kernels.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from jaxtyping import Bool, Float
from torch import Tensor

#: Pooled tokens ahead of the node tokens.
POOLED_TOKENS = 2


def _structure(nodes: int, device: torch.device) -> Bool[Tensor, "token token"]:
    """Whether query ``i`` may see key ``j`` given only the kinds of the tokens."""
    graph_of = torch.cat(
        [
            torch.full((POOLED_TOKENS,), -1, device=device),
            torch.arange(2 * nodes, device=device) // nodes,  # graph of each node
        ]
    )
    is_pool = graph_of == -1
    return (
        is_pool[None, :] | is_pool[:, None] | (graph_of[:, None] != graph_of[None, :])
    )


@lru_cache(maxsize=32)
def _cpu_structure(nodes: int, padded: int) -> tuple[Tensor, Tensor]:
    """The CPU structure and its additive form padded to ``padded`` keys (cached:
    it is rebuilt for every agent call otherwise)."""
    structure = _structure(nodes, torch.device("cpu"))
    tokens = structure.shape[0]
    structure_bias = torch.zeros(tokens, padded)
    structure_bias[:, :tokens].masked_fill_(~structure, float("-inf"))
    return structure, structure_bias


class AttentionMask:
    """Query ``i`` sees key ``j`` iff the structure allows it and ``j`` is real.

    Parameters
    ----------
    node_mask
        Real nodes of both graphs of every row.
    """

    def __init__(self, node_mask: Bool[Tensor, "batch 2 node"]) -> None:
        batch, _, nodes = node_mask.shape
        self.nodes = nodes
        self.real_nodes = node_mask.reshape(batch, 2 * nodes)
        self._allowed: Tensor | None = None
        self._bias: Tensor | None = None

    @property
    def tokens(self) -> int:
        """Tokens per row: the pooled tokens and both graphs' nodes."""
        return POOLED_TOKENS + 2 * self.nodes

    def allowed(self) -> Bool[Tensor, "batch 1 token token"]:
        """Boolean mask (``True``: may attend), as ``scaled_dot_product_attention``
        takes it, shared by the heads."""
        if self._allowed is None:
            device = self.real_nodes.device
            structure = (
                _cpu_structure(self.nodes, self.tokens)[0]
                if device.type == "cpu"
                else _structure(self.nodes, device)
            )
            real_key = torch.cat(
                [
                    torch.ones_like(self.real_nodes[:, :POOLED_TOKENS]),
                    self.real_nodes,
                ],
                dim=1,
            )
            self._allowed = (structure[None] & real_key[:, None, :])[:, None]
        return self._allowed

    def bias(self, lanes: int) -> Float[Tensor, "batch token padded"]:
        """Additive mask of the fused CPU kernels: 0 where query ``i`` sees key
        ``j``, ``-inf`` elsewhere and in the key columns that pad the tokens to a
        multiple of ``lanes``."""
        if self._bias is None:
            batch, tokens = self.real_nodes.shape[0], self.tokens
            padded = -(-tokens // lanes) * lanes
            key_bias = torch.full((batch, padded), float("-inf"))
            key_bias[:, :POOLED_TOKENS] = 0.0
            key_bias[:, POOLED_TOKENS:tokens].masked_fill_(self.real_nodes, 0.0)
            structure_bias = _cpu_structure(self.nodes, padded)[1]
            self._bias = structure_bias[None] + key_bias[:, None, :]
        return self._bias
