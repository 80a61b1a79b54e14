"""The agents' heads as one fused CPU kernel.

From the transformer's output an agent computes its node logits (one per node,
``-inf`` at padding), its value and, for the verifier, its decision logits (two
``Linear, ReLU, Linear`` MLPs on the pooled tokens): ~15 small PyTorch operations
forward and as many backward, ~1.2 ms of a 256-row gradient step.
``heads.cpp`` does them in one call each way (building: :mod:`.kernels`).

Used only where it applies (CPU float32, ReLU heads, a one-layer node selector, no
round one-hot in the heads' input, widths multiple of the vector width, not inside
``torch.compile``); elsewhere, and when the build fails, the heads run in PyTorch:
same results to float rounding. ``PVG_FUSED_CPU_HEADS=0`` turns it off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from pvg_pipeline.accelerate.cpu.kernels import (
    loaded,
    usable,
    vector_multiples,
)

if TYPE_CHECKING:
    from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import (
        GraphIsomorphismAgent,
    )

SWITCH = "PVG_FUSED_CPU_HEADS"
_NONE = torch.empty(0)


def fusable(agent: GraphIsomorphismAgent, tokens: Tensor) -> bool:
    """Whether :func:`fused_heads` can compute ``agent``'s heads on ``tokens``."""
    mlps = [agent.value_head]
    if agent.decision_head is not None:
        mlps.append(agent.decision_head)
    if not all(isinstance(mlp[1], nn.ReLU) for mlp in mlps):
        return False
    # The kernel computes one linear node selector and heads that read exactly the
    # two pooled tokens (no round one-hot appended).
    if not isinstance(agent.node_head, nn.Linear):
        return False
    if any(mlp[0].in_features != 2 * tokens.shape[-1] for mlp in mlps):
        return False
    if not usable(tokens, SWITCH):
        return False
    # One hidden width for both heads.
    return agent.value_head[0].out_features == mlps[-1][0].out_features and (
        vector_multiples(SWITCH, tokens.shape[-1], mlps[0][0].out_features)
    )


def _parameters(agent: GraphIsomorphismAgent) -> list[Tensor]:
    """Node head weight and bias, value head W1, b1, w2, b2, decision head W1, b1,
    W2, b2 (empty tensors for a prover)."""
    value = agent.value_head
    parameters = [
        agent.node_head.weight,
        agent.node_head.bias,
        value[0].weight,
        value[0].bias,
        value[2].weight,
        value[2].bias,
    ]
    if agent.decision_head is None:
        return parameters + [_NONE] * 4
    decision = agent.decision_head
    return parameters + [
        decision[0].weight,
        decision[0].bias,
        decision[2].weight,
        decision[2].bias,
    ]


def _forward(
    tokens: Tensor, node_mask: Tensor, parameters: list[Tensor], keep: bool
) -> list[Tensor]:
    """The kernel's logits, decision, value and, with ``keep``, hidden activations."""
    wn, bn, w1v, b1v, w2v, b2v, w1d, b1d, w2d, b2d = parameters
    return loaded(SWITCH).heads_forward(
        tokens.contiguous(), node_mask.contiguous(), wn.reshape(-1), bn,
        w1v.t().contiguous(), b1v, w2v.reshape(-1), b2v,
        w1d.t().contiguous() if w1d.numel() else w1d, b1d, w2d, b2d, keep,
    )  # fmt: skip


class _FusedHeads(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, tokens: Tensor, node_mask: Tensor, *parameters: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        tokens, node_mask = tokens.contiguous(), node_mask.contiguous()
        logits, decision, value, hid_v, hid_d = _forward(
            tokens, node_mask, list(parameters), keep=True
        )
        wn, _, w1v, _, w2v, _, w1d, _, w2d, _ = parameters
        ctx.save_for_backward(tokens, node_mask, wn, w1v, w2v, hid_v, w1d, w2d, hid_d)
        ctx.extension = loaded(SWITCH)  # even if switched off before the backward
        return logits, decision, value

    @staticmethod
    def backward(  # type: ignore[override]
        ctx, grad_logits: Tensor, grad_decision: Tensor, grad_value: Tensor
    ) -> tuple[Tensor | None, ...]:
        tokens, node_mask, wn, w1v, w2v, hid_v, w1d, w2d, hid_d = ctx.saved_tensors
        decides = w1d.numel() > 0
        grad_tokens, dwn, dbn, dw1v, db1v, dw2v, db2v, *decision = (
            ctx.extension.heads_backward(
                grad_logits, grad_decision, grad_value, tokens, node_mask,
                wn.reshape(-1), w1v.contiguous(), w2v.reshape(-1), hid_v,
                w1d.contiguous() if decides else w1d, w2d.contiguous(), hid_d,
            )
        )  # fmt: skip
        value_grads = (
            dwn.view(wn.shape), dbn, dw1v, db1v, dw2v.view(w2v.shape), db2v
        )  # fmt: skip
        return grad_tokens, None, *value_grads, *(decision or [None] * 4)


def fused_heads(
    agent: GraphIsomorphismAgent,
    tokens: Float[Tensor, "batch token d_model"],
    node_mask: Bool[Tensor, "batch two_nodes"],
) -> tuple[
    Float[Tensor, "batch two_nodes"], Float[Tensor, "batch 3"] | None,
    Float[Tensor, "batch"],
]:  # fmt: skip
    """Node logits, decision logits (``None`` for a prover) and value from the
    transformer's output, as :class:`~.agents.GraphIsomorphismAgent` computes them.
    Check :func:`fusable` first."""
    parameters = _parameters(agent)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (tokens, *parameters)):
        logits, decision, value = _FusedHeads.apply(tokens, node_mask, *parameters)
    else:  # acting, evaluation: no autograd node
        logits, decision, value, _, _ = _forward(
            tokens, node_mask, parameters, keep=False
        )
    return logits, decision if agent.decision_head is not None else None, value
