"""Fused transformer layer for acting and evaluation on the CPU (C++ extension).

Without gradients (collecting experience, evaluating), the agents' post-norm
transformer layer is ~12 PyTorch operations on (rows, 24 tokens, 16 features), most
of whose cost is per-operation overhead. ``cpu_transformer.cpp`` takes each row
through the whole layer in cache, reusing the attention of :mod:`.cpu_attention`
and the products of :mod:`.cpu_gin` (see ``docs/performance.md``; building:
:mod:`.cpu_kernels`). Training needs the gradients, so its forward pass keeps the
per-operation path (with the fused attention).

Used only where it applies (no gradient wanted, CPU, float32, a ReLU MLP, widths
multiple of the vector width, not inside ``torch.compile``); elsewhere, and when the
build fails, the layer runs in PyTorch: same results to float rounding. Set
``PVG_FUSED_CPU_TRANSFORMER=0`` to turn it off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor, nn

from pvg_pipeline.pvg.scenarios.graph_isomorphism.attention_mask import (
    AttentionMask,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.cpu_kernels import (
    load_extension,
    usable,
)

if TYPE_CHECKING:
    from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import (
        CrossGraphAttentionLayer,
    )

SWITCH = "PVG_FUSED_CPU_TRANSFORMER"


def fusable(layer: CrossGraphAttentionLayer, tokens: Tensor) -> bool:
    """Whether :func:`fused_layer` can compute ``layer(tokens, ...)``."""
    if torch.is_grad_enabled() and (
        tokens.requires_grad or any(p.requires_grad for p in layer.parameters())
    ):
        return False
    if not isinstance(layer.mlp[1], nn.ReLU) or not usable(tokens, SWITCH):
        return False
    extension = load_extension(SWITCH)
    assert extension is not None
    lanes = extension.lanes()
    d_model, d_mlp = layer.mlp[0].in_features, layer.mlp[0].out_features
    return d_model % lanes == 0 and d_mlp % lanes == 0


def fused_layer(
    layer: CrossGraphAttentionLayer,
    tokens: Float[Tensor, "batch token d_model"],
    mask: AttentionMask,
) -> Float[Tensor, "batch token d_model"]:
    """``layer(tokens, mask)`` in one kernel, without autograd. Check
    :func:`fusable` first."""
    extension = load_extension(SWITCH)
    assert extension is not None, "check fusable() before calling fused_layer"
    d_model = tokens.shape[-1]
    first, second = layer.mlp[0], layer.mlp[2]
    with torch.no_grad():
        return extension.transformer_forward(
            tokens.contiguous(),
            mask.bias(extension.lanes()),
            layer.num_heads,
            (d_model // layer.num_heads) ** -0.5,
            layer.qkv.weight.t().contiguous(),
            layer.qkv.bias,
            layer.out.weight.t().contiguous(),
            layer.out.bias,
            layer.norm_attention.weight,
            layer.norm_attention.bias,
            layer.norm_attention.eps,
            first.weight.t().contiguous(),
            first.bias,
            second.weight.t().contiguous(),
            second.bias,
            layer.norm_mlp.weight,
            layer.norm_mlp.bias,
            layer.norm_mlp.eps,
        )
