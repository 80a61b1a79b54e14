"""The transformer's tokens from the GIN output as one fused CPU kernel.

Between the GIN encoder and the transformer the agents' body pools each graph's
nodes (sum, eval-mode batch norm), forms the pair-invariant pooled tokens, projects
them and the nodes to the transformer's width and adds the round embedding: ~15
small PyTorch operations forward and as many backward, ~1.5 ms of a 256-row
gradient step. ``tokens.cpp`` does it row by row in one call each way (building:
:mod:`.kernels`).

Used only where it applies (CPU float32, a batch norm in eval mode with running
statistics or none, widths multiple of the vector width, not inside
``torch.compile``); elsewhere, and when the build fails, the body runs in PyTorch:
same results to float rounding. ``PVG_FUSED_CPU_TOKENS=0`` turns it off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int64
from torch import Tensor, nn

from pvg_pipeline.accelerate.cpu.kernels import (
    loaded,
    usable,
    vector_multiples,
)

if TYPE_CHECKING:
    from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import AgentBody

SWITCH = "PVG_FUSED_CPU_TOKENS"
_NONE = torch.empty(0)


def fusable(body: AgentBody, h: Tensor) -> bool:
    """Whether :func:`fused_tokens` can compute ``body``'s tokens from ``h``."""
    norm = body.pool_norm
    if isinstance(norm, nn.BatchNorm1d):
        # Training-mode batch norm uses (and updates) batch statistics.
        if norm.training or norm.running_mean is None or not norm.affine:
            return False
    elif not isinstance(norm, nn.Identity):
        return False
    embedding = body.round_embedding
    if embedding.max_norm is not None or not usable(h, SWITCH):
        return False
    return vector_multiples(SWITCH, h.shape[-1], body.node_in.out_features)


def _norm_tensors(body: AgentBody) -> tuple[Tensor, Tensor, Tensor, Tensor, float]:
    norm = body.pool_norm
    if isinstance(norm, nn.BatchNorm1d):
        assert norm.running_mean is not None and norm.running_var is not None
        return norm.weight, norm.bias, norm.running_mean, norm.running_var, norm.eps
    return _NONE, _NONE, _NONE, _NONE, 0.0


def _forward(
    h: Tensor, rounds: Tensor, parameters: tuple[Tensor, ...], eps: float
) -> Tensor:
    """The kernel's tokens; ``parameters``: pool_in's weight and bias, the round
    embedding, node_in's weight and bias, and the batch norm's four tensors."""
    wp, bp, embedding, wn, bn, *norm = parameters
    return loaded(SWITCH).tokens_forward(
        h.contiguous(), rounds.contiguous(), wp.t().contiguous(), bp, embedding,
        wn.t().contiguous(), bn, *norm, eps,
    )  # fmt: skip


class _FusedTokens(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        h: Tensor,
        rounds: Tensor,
        wp: Tensor,
        bp: Tensor,
        embedding: Tensor,
        wn: Tensor,
        bn: Tensor,
        norm_weight: Tensor,
        norm_bias: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
        eps: float,
    ) -> Tensor:
        h, rounds = h.contiguous(), rounds.contiguous()
        norm = (norm_weight, norm_bias, running_mean, running_var)
        tokens = _forward(h, rounds, (wp, bp, embedding, wn, bn, *norm), eps)
        ctx.save_for_backward(h, rounds, wp, embedding, wn, *norm)
        ctx.eps = eps
        ctx.extension = loaded(SWITCH)  # even if switched off before the backward
        return tokens

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        h, rounds, wp, embedding, wn, *norm = ctx.saved_tensors
        grad_h, dwp, dbp, dembedding, dwn, dbn, dweight, dbias = (
            ctx.extension.tokens_backward(
                grad, h, rounds, wp.contiguous(), embedding, wn.contiguous(), *norm,
                ctx.eps,
            )
        )  # fmt: skip
        has_norm = norm[0].numel() > 0
        return (
            grad_h, None, dwp, dbp, dembedding, dwn, dbn,
            dweight if has_norm else None, dbias if has_norm else None,
            None, None, None,
        )  # fmt: skip


def fused_tokens(
    body: AgentBody,
    h: Float[Tensor, "batch 2 node d_gnn"],
    round_number: Int64[Tensor, "batch"],
) -> Float[Tensor, "batch token d_model"]:
    """``[pool_in(pair) + round_embedding(round), node_in(h)]`` as
    :class:`~.agents.AgentBody` builds them. Check :func:`fusable` first."""
    weight, bias, running_mean, running_var, eps = _norm_tensors(body)
    parameters = (
        body.pool_in.weight,
        body.pool_in.bias,
        body.round_embedding.weight,
        body.node_in.weight,
        body.node_in.bias,
    )
    norm = (weight, bias, running_mean, running_var)
    if torch.is_grad_enabled() and any(
        t.requires_grad for t in (h, *parameters, weight, bias)
    ):
        return _FusedTokens.apply(h, round_number, *parameters, *norm, eps)
    return _forward(h, round_number, (*parameters, *norm), eps)  # no autograd node
