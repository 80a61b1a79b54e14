"""Fused transformer layer kernels on the CPU (C++ extension).

The agents' post-norm transformer layer is ~12 PyTorch operations on (rows, 24
tokens, 16 features), most of whose cost is per-operation overhead and passes over
the (rows, 24, 64) hidden activations. ``transformer.cpp`` has two kernels (see
``docs/performance.md``; building: :mod:`.kernels`):

- :func:`fused_layer`: without gradients (collecting experience, evaluating), each
  row goes through the whole layer in cache, reusing the attention of
  :mod:`.attention` and the products of :mod:`.gin`;
- :func:`fused_attention_block` and :func:`fused_feed_forward`: with gradients
  (training), the layer's two halves, ``LayerNorm(x + attention(x))`` and
  ``LayerNorm(x + MLP(x))``, forward and backward, chunk by chunk of tokens
  (``transformer_training.cpp``).

Used only where they apply (CPU, float32, a ReLU MLP, widths multiple of the vector
width, not inside ``torch.compile``); elsewhere, and when the build fails, the layer
runs in PyTorch: same results to float rounding. Set
``PVG_FUSED_CPU_TRANSFORMER=0`` to turn both off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor, nn

from pvg_pipeline.accelerate.cpu.kernels import (
    loaded,
    usable,
    vector_multiples,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.attention_mask import (
    AttentionMask,
)

if TYPE_CHECKING:
    from pvg_pipeline.pvg.scenarios.graph_isomorphism.layers import (
        CrossGraphAttentionLayer,
    )

SWITCH = "PVG_FUSED_CPU_TRANSFORMER"


def fusable(layer: CrossGraphAttentionLayer, tokens: Tensor) -> bool:
    """Whether :func:`fused_layer` can compute ``layer(tokens, ...)``."""
    if torch.is_grad_enabled() and (
        tokens.requires_grad or any(p.requires_grad for p in layer.parameters())
    ):
        return False
    return blocks_fusable(layer, tokens)


def blocks_fusable(layer: CrossGraphAttentionLayer, tokens: Tensor) -> bool:
    """Whether :func:`fused_attention_block` and :func:`fused_feed_forward` can
    compute the layer's two halves."""
    if not isinstance(layer.mlp[1], nn.ReLU) or not usable(tokens, SWITCH):
        return False
    return vector_multiples(SWITCH, layer.mlp[0].in_features, layer.mlp[0].out_features)


def fused_layer(
    layer: CrossGraphAttentionLayer,
    tokens: Float[Tensor, "batch token d_model"],
    mask: AttentionMask,
) -> Float[Tensor, "batch token d_model"]:
    """``layer(tokens, mask)`` in one kernel, without autograd. Check
    :func:`fusable` first."""
    extension = loaded(SWITCH)
    first, second = layer.mlp[0], layer.mlp[2]
    # The extension records no autograd graph (nothing here requires gradients).
    return extension.transformer_forward(
        tokens.contiguous(),
        mask.bias(extension.lanes()),
        layer.num_heads,
        _scale(layer, tokens),
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


class _FusedFeedForward(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        tokens: Tensor,
        w1: Tensor,
        b1: Tensor,
        w2: Tensor,
        b2: Tensor,
        gamma: Tensor,
        beta: Tensor,
        eps: float,
    ) -> Tensor:
        extension = loaded(SWITCH)
        rows = tokens.reshape(-1, tokens.shape[-1]).contiguous()
        out, hidden, normalized, rstd = extension.feed_forward_forward(
            rows, w1.t().contiguous(), b1, w2.t().contiguous(), b2, gamma, beta, eps
        )
        ctx.save_for_backward(rows, hidden, normalized, rstd, w1, w2, gamma)
        ctx.extension = extension  # even if switched off before the backward
        return out.view(tokens.shape)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        rows, hidden, normalized, rstd, w1, w2, gamma = ctx.saved_tensors
        grad_rows, *grad_parameters = ctx.extension.feed_forward_backward(
            grad_out.reshape(rows.shape), rows, hidden, normalized, rstd, w1, w2, gamma
        )
        return (grad_rows.view(grad_out.shape), *grad_parameters, None)


def fused_feed_forward(
    layer: CrossGraphAttentionLayer, tokens: Float[Tensor, "batch token d_model"]
) -> Float[Tensor, "batch token d_model"]:
    """``layer.norm_mlp(tokens + layer.mlp(tokens))`` with its gradients. Check
    :func:`blocks_fusable` first."""
    first, second = layer.mlp[0], layer.mlp[2]
    norm = layer.norm_mlp
    return _FusedFeedForward.apply(
        tokens,
        first.weight,
        first.bias,
        second.weight,
        second.bias,
        norm.weight,
        norm.bias,
        norm.eps,
    )


def _scale(layer: CrossGraphAttentionLayer, tokens: Tensor) -> float:
    """The attention's query scale, ``head_dim ** -0.5``."""
    return float((tokens.shape[-1] // layer.num_heads) ** -0.5)


class _FusedAttentionBlock(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        tokens: Tensor,
        bias: Tensor,
        wqkv: Tensor,
        bqkv: Tensor,
        wout: Tensor,
        bout: Tensor,
        gamma: Tensor,
        beta: Tensor,
        num_heads: int,
        scale: float,
        eps: float,
    ) -> Tensor:
        extension = loaded(SWITCH)
        tokens = tokens.contiguous()
        out, *kept = extension.attention_block_forward(
            tokens,
            bias,
            num_heads,
            scale,
            wqkv.t().contiguous(),
            bqkv,
            wout.t().contiguous(),
            bout,
            gamma,
            beta,
            eps,
        )
        ctx.save_for_backward(tokens, *kept, wqkv, wout, gamma)
        ctx.num_heads, ctx.scale = num_heads, scale
        ctx.extension = extension  # even if switched off before the backward
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        tokens, qkv, probs, attended, normalized, rstd, wqkv, wout, gamma = (
            ctx.saved_tensors
        )
        grad_tokens, *grad_parameters = ctx.extension.attention_block_backward(
            grad_out,
            tokens,
            qkv,
            probs,
            attended,
            normalized,
            rstd,
            ctx.num_heads,
            ctx.scale,
            wqkv,
            wout,
            gamma,
        )
        return (grad_tokens, None, *grad_parameters, None, None, None)


def fused_attention_block(
    layer: CrossGraphAttentionLayer,
    tokens: Float[Tensor, "batch token d_model"],
    mask: AttentionMask,
) -> Float[Tensor, "batch token d_model"]:
    """``layer.norm_attention(tokens + layer.out(attention))`` with its gradients,
    the attention on ``layer.qkv(tokens)`` as ``mask`` allows. Check
    :func:`blocks_fusable` first."""
    extension = loaded(SWITCH)
    norm = layer.norm_attention
    return _FusedAttentionBlock.apply(
        tokens,
        mask.bias(extension.lanes()),
        layer.qkv.weight,
        layer.qkv.bias,
        layer.out.weight,
        layer.out.bias,
        norm.weight,
        norm.bias,
        layer.num_heads,
        _scale(layer, tokens),
        norm.eps,
    )
