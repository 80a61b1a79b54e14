"""The PPO loss of a minibatch as one fused CPU kernel.

From an agent's outputs the PPO step computes the action log-probabilities, the
entropies, the clipped surrogate, the value loss and the entropy bonus: ~40 small
PyTorch operations forward and as many autograd nodes backward, ~1 ms of a 256-row
gradient step on the CPU (each operation costs ~10-20 us right after the network's
kernels have evicted PyTorch's code and data from the caches). ``loss.cpp``
computes the loss and, since the loss ends the graph, its gradients with respect
to the node logits, decision logits and values in one call; the backward pass only
scales them (building: :mod:`.kernels`).

It computes the formulas of the plain path (every row real, advantages normalised
per minibatch) with the squared-error value loss, so the trainer uses it only on
its eager CPU path, for CPU float32 outputs outside ``torch.compile`` and
``value_loss: mse``; elsewhere, and when the build fails, the loss runs in PyTorch:
same results to float rounding. ``PVG_FUSED_CPU_LOSS=0`` turns it off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int64
from torch import Tensor

from pvg_pipeline.accelerate.cpu.kernels import loaded, usable
from pvg_pipeline.pvg.protocols import Decision
from pvg_pipeline.pvg.trainers.ppo_loss import LOSS_KEYS, LossWeights

if TYPE_CHECKING:
    from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import AgentOutput

SWITCH = "PVG_FUSED_CPU_LOSS"
_NONE = torch.empty(0)


def fusable(output: AgentOutput, value_loss: str = "mse") -> bool:
    """Whether :func:`fused_ppo_loss` can take ``output`` with the value loss
    ``value_loss`` (it implements the squared error only)."""
    return (
        value_loss == "mse"
        and usable(output.node_logits, SWITCH)
        and (
            output.decision_logits is None
            or output.decision_logits.dtype == torch.float32
        )
    )


class _FusedLoss(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        node_logits: Tensor,
        decision_logits: Tensor,
        value: Tensor,
        *data_and_settings: Tensor | float | bool,
    ) -> tuple[Tensor, Tensor]:
        loss, reported, *grads = loaded(SWITCH).ppo_loss(
            node_logits.contiguous(),
            decision_logits.contiguous(),
            value.contiguous(),
            *data_and_settings,
        )
        ctx.save_for_backward(*grads)
        ctx.mark_non_differentiable(reported)
        return loss, reported

    @staticmethod
    def backward(  # type: ignore[override]
        ctx, grad_loss: Tensor, _grad_reported: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        grads = list(ctx.saved_tensors)
        if float(grad_loss) != 1.0:  # the step's backward() passes exactly 1
            grads = [grad * grad_loss for grad in grads]
        grad_node, grad_decision, grad_value = grads
        return (
            grad_node,
            grad_decision if ctx.needs_input_grad[1] else None,
            grad_value,
            *([None] * 11),
        )


def fused_ppo_loss(
    output: AgentOutput,
    node: Int64[Tensor, "row"],
    decision: Int64[Tensor, "row"],
    decision_allowed: Bool[Tensor, "row"],
    old_log_prob: Float[Tensor, "row"],
    advantage: Float[Tensor, "row"],
    target: Float[Tensor, "row"],
    clip_epsilon: float,
    value_coefficient: float,
    entropy_coefficient: float,
    normalize_advantage: bool,
) -> tuple[Float[Tensor, ""], Float[Tensor, "4"]]:
    """The PPO loss of a minibatch of real rows and its four reported means
    (policy loss, value loss, entropy, decision entropy), as
    ``AgentUpdater._losses`` computes them. Check :func:`fusable` first."""
    decision_logits = output.decision_logits
    return _FusedLoss.apply(
        output.node_logits,
        _NONE if decision_logits is None else decision_logits,
        output.value,
        node.contiguous(),
        decision.contiguous(),
        decision_allowed.contiguous(),
        old_log_prob.contiguous(),
        advantage.contiguous(),
        target.contiguous(),
        int(Decision.CONTINUE),
        clip_epsilon,
        value_coefficient,
        entropy_coefficient,
        normalize_advantage,
    )


def eager_ppo_loss(
    output: AgentOutput, minibatch: Mapping[str, Tensor], weights: LossWeights
) -> tuple[Float[Tensor, ""], Float[Tensor, "4"]] | None:
    """The trainer's eager minibatch loss (an
    :data:`~pvg_pipeline.pvg.trainers.ppo_loss.EagerLoss`): :func:`fused_ppo_loss`
    where it applies, else ``None`` (the trainer then uses its own loss)."""
    if not fusable(output, weights.value_loss):
        return None
    return fused_ppo_loss(
        output,
        *(minibatch[key] for key in LOSS_KEYS),
        weights.clip_epsilon,
        weights.value_coefficient,
        weights.entropy_coefficient,
        weights.normalize_advantage,
    )
