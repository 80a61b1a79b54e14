"""The layers of the graph-isomorphism agents: a dense GIN layer and a cross-graph
transformer layer (plain PyTorch; :mod:`pvg_pipeline.accelerate.cpu` has fused
versions of both)."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from pvg_pipeline.pvg.scenarios.graph_isomorphism.attention_mask import (
    AttentionMask,
)

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def mlp(d_in: int, d_hidden: int, d_out: int, activation: str) -> nn.Sequential:
    """``Linear, activation, Linear``."""
    return nn.Sequential(
        nn.Linear(d_in, d_hidden),
        _ACTIVATIONS[activation](),
        nn.Linear(d_hidden, d_out),
    )


def node_selector(d_model: int, layers: int, activation: str) -> nn.Module:
    """One logit per node token: a linear map, or ``layers`` linear layers of
    hidden width ``d_model`` with the activation between them."""
    if layers == 1:
        return nn.Linear(d_model, 1)
    modules: list[nn.Module] = []
    for _ in range(layers - 1):
        modules += [nn.Linear(d_model, d_model), _ACTIVATIONS[activation]()]
    return nn.Sequential(*modules, nn.Linear(d_model, 1))


class DenseGINLayer(nn.Module):
    """GIN: ``h' = MLP((1 + eps) h + A h)`` with dense adjacency, zero on padding."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, activation: str) -> None:
        super().__init__()
        self.activation = activation
        self.eps = nn.Parameter(torch.zeros(()))
        self.mlp = mlp(d_in, d_hidden, d_out, activation)

    def forward(
        self,
        features: Float[Tensor, "batch graph node feature"],
        adjacency: Float[Tensor, "batch graph node node"],
        node_mask: Bool[Tensor, "batch graph node"],
    ) -> Float[Tensor, "batch graph node feature"]:
        """Aggregate neighbours, transform, and zero the padding nodes."""
        aggregated = (1 + self.eps) * features + adjacency @ features
        return self.mlp(aggregated) * node_mask[..., None]


class CrossGraphAttentionLayer(nn.Module):
    """Post-norm transformer layer; an :class:`AttentionMask` says which token sees
    which, for every head."""

    def __init__(
        self, d_model: int, num_heads: int, d_mlp: int, activation: str
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.mlp = mlp(d_model, d_mlp, d_model, activation)
        self.norm_attention = nn.LayerNorm(d_model)
        self.norm_mlp = nn.LayerNorm(d_model)

    def forward(
        self,
        tokens: Float[Tensor, "batch token d_model"],
        mask: AttentionMask,
    ) -> Float[Tensor, "batch token d_model"]:
        """Self-attention where each query sees the keys ``mask`` allows."""
        attended = self.attend(self.qkv(tokens), mask)
        tokens = self.norm_attention(tokens + self.out(attended))
        return self.norm_mlp(tokens + self.mlp(tokens))

    def attend(
        self, qkv: Float[Tensor, "batch token qkv"], mask: AttentionMask
    ) -> Float[Tensor, "batch token d_model"]:
        """Multi-head attention from the ``qkv`` projection, heads concatenated."""
        batch, length, three_d_model = qkv.shape
        d_model = three_d_model // 3
        head_dim = d_model // self.num_heads
        query, key, value = qkv.view(
            batch, length, 3, self.num_heads, head_dim
        ).permute(2, 0, 3, 1, 4)
        attended = nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=mask.allowed()
        )
        return attended.transpose(1, 2).reshape(batch, length, d_model)
