"""Fused masked attention for the agents' tiny heads on the CPU (a C++ extension).

At the agents' sizes (24 tokens, 4 heads of 4 dimensions, a few hundred rows)
``scaled_dot_product_attention`` on the CPU costs ~11 ms forward + backward per
256-row minibatch, a quarter of a PPO gradient step; the fused kernel in
``attention.cpp`` computes the same attention in ~3.5 ms (see
``docs/performance.md``; building: :mod:`.kernels`).

Used only where it applies (CPU, float32, not inside ``torch.compile``); everywhere
else, and when the build fails (no C++ compiler), the agents use PyTorch's
attention: same results to float rounding. Set ``PVG_FUSED_CPU_ATTENTION=0`` to
turn it off.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from pvg_pipeline.accelerate.cpu.kernels import (
    loaded,
    usable,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.attention_mask import (
    AttentionMask,
)

SWITCH = "PVG_FUSED_CPU_ATTENTION"


def fusable(qkv: Tensor) -> bool:
    """Whether :func:`fused_attention` can compute this attention."""
    return usable(qkv, SWITCH)


class _FusedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv: Tensor, bias: Tensor, num_heads: int) -> Tensor:  # type: ignore[override]
        extension = loaded(SWITCH)
        scale = (qkv.shape[-1] // (3 * num_heads)) ** -0.5
        out, probs = extension.attention_forward(
            qkv.contiguous(), bias, num_heads, scale, ctx.needs_input_grad[0]
        )
        ctx.save_for_backward(qkv, probs)
        ctx.num_heads, ctx.scale = num_heads, scale
        ctx.extension = extension  # even if switched off before the backward
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        qkv, probs = ctx.saved_tensors
        grad = ctx.extension.attention_backward(
            grad_out, qkv.contiguous(), probs, ctx.num_heads, ctx.scale
        )
        return grad, None, None


def fused_attention(
    qkv: Float[Tensor, "batch token three_d_model"],
    mask: AttentionMask,
    num_heads: int,
) -> Float[Tensor, "batch token d_model"]:
    """Multi-head attention where each query sees the keys ``mask`` allows.

    ``qkv`` is the output of the layer's ``Linear(d_model, 3 * d_model)`` (queries,
    keys, values; heads contiguous inside each); the result is the heads'
    outputs concatenated, i.e. ``scaled_dot_product_attention`` followed by the
    usual transpose and reshape. Check :func:`fusable` first.
    """
    extension = loaded(SWITCH)
    return _FusedAttention.apply(qkv, mask.bias(extension.lanes()), num_heads)
