"""Fused dense GIN layer for the agents' small graphs on the CPU (C++ extension).

``out = mask * MLP((1 + eps) h + A h)`` with a one-hidden-layer ReLU MLP is ~8
PyTorch operations per layer, each a pass over (rows, 2, nodes, 64)
intermediates, and it computes the padding nodes too. ``gin.cpp`` does each
graph in one go in cache, on its real nodes only: forward + backward of a layer
for a 256-row minibatch in ~1.4 ms instead of ~2.8 ms, one PPO iteration ~16 %
faster (see ``docs/performance.md``; building: :mod:`.kernels`).

Used only where it applies (CPU, float32, ReLU, widths multiple of the vector
width, not inside ``torch.compile``); elsewhere, and when the build fails, the
layer runs in PyTorch: same results to float rounding. Set ``PVG_FUSED_CPU_GIN=0``
to turn it off.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from pvg_pipeline.accelerate.cpu.kernels import (
    loaded,
    usable,
    vector_multiples,
)

SWITCH = "PVG_FUSED_CPU_GIN"


def fusable(
    features: Tensor, adjacency: Tensor, mlp: nn.Sequential, activation: str
) -> bool:
    """Whether :func:`fused_gin` can compute this layer."""
    if activation != "relu" or adjacency.requires_grad or not usable(features, SWITCH):
        return False
    first, second = mlp[0], mlp[2]
    return vector_multiples(
        SWITCH, first.in_features, first.out_features, second.out_features
    )


class _FusedGIN(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        features: Tensor,
        adjacency: Tensor,
        node_mask: Tensor,
        eps: Tensor,
        w1: Tensor,
        b1: Tensor,
        w2: Tensor,
        b2: Tensor,
    ) -> Tensor:
        inputs = (features.contiguous(), adjacency.contiguous(), node_mask.contiguous())
        out, agg, hidden = _gin_forward(*inputs, eps, w1, b1, w2, b2, keep=True)
        ctx.save_for_backward(*inputs, eps, w1, w2, agg, hidden)
        ctx.extension = loaded(SWITCH)  # even if switched off later
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        features, adjacency, node_mask, eps, w1, w2, agg, hidden = ctx.saved_tensors
        grads = ctx.extension.gin_backward(
            grad_out,
            features,
            adjacency,
            node_mask,
            float(eps),
            w1.contiguous(),
            w2.contiguous(),
            agg,
            hidden,
        )
        grad_h, grad_w1, grad_b1, grad_w2, grad_b2, grad_eps = grads
        return (
            grad_h,
            None,
            None,
            grad_eps.reshape(eps.shape),
            grad_w1,
            grad_b1,
            grad_w2,
            grad_b2,
        )


def fused_gin(
    features: Float[Tensor, "batch graph node d_in"],
    adjacency: Float[Tensor, "batch graph node node"],
    node_mask: Bool[Tensor, "batch graph node"],
    eps: Float[Tensor, ""],
    mlp: nn.Sequential,
) -> Float[Tensor, "batch graph node d_out"]:
    """``node_mask * mlp((1 + eps) features + adjacency @ features)`` for a
    ``Linear, ReLU, Linear`` ``mlp``. Check :func:`fusable` first."""
    first, second = mlp[0], mlp[2]
    parameters = (eps, first.weight, first.bias, second.weight, second.bias)
    # Keep the activations for a backward pass only when there will be one (the
    # parameters require gradients under ``no_grad`` too).
    keep = torch.is_grad_enabled() and any(
        t.requires_grad for t in (features, *parameters)
    )
    if not keep:  # acting, evaluation: no autograd node (~30 us a layer)
        out, _, _ = _gin_forward(features, adjacency, node_mask, *parameters, keep=keep)
        return out
    return _FusedGIN.apply(features, adjacency, node_mask, *parameters)


def _gin_forward(
    features: Tensor,
    adjacency: Tensor,
    node_mask: Tensor,
    *parameters: Tensor,
    keep: bool,
) -> list[Tensor]:
    """The kernel's output, and with ``keep`` its kept activations;
    ``parameters`` are eps, W1, b1, W2 and b2."""
    eps, w1, b1, w2, b2 = parameters
    extension = loaded(SWITCH)
    return extension.gin_forward(
        features.contiguous(),
        adjacency.contiguous(),
        node_mask.contiguous(),
        float(eps),
        w1.t().contiguous(),
        b1.contiguous(),
        w2.t().contiguous(),
        b2.contiguous(),
        keep,
    )
