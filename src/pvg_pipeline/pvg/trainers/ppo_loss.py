"""The PPO loss of one minibatch, in PyTorch operations.

The clipped surrogate, the value loss and the entropy bonus of one agent's
minibatch, with per-minibatch advantage normalisation. On the CPU the trainer's
eager path computes the same with the fused kernel of
:mod:`pvg_pipeline.pvg.scenarios.graph_isomorphism.cpu_loss`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import AgentOutput
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import action_log_prob

#: The four reported losses, in the order :func:`ppo_loss` returns them.
LOSS_NAMES = ("policy_loss", "value_loss", "entropy", "decision_entropy")
#: The minibatch's keys the loss reads besides the agent's output.
LOSS_KEYS = (
    "node",
    "decision",
    "decision_allowed",
    "old_log_prob",
    "advantage",
    "target",
)


@dataclass(frozen=True)
class LossWeights:
    """The PPO settings one gradient step needs."""

    clip_epsilon: float
    entropy_coefficient: float
    value_coefficient: float
    max_grad_norm: float
    normalize_advantage: bool


def masked_mean(values: Tensor, valid: Bool[Tensor, "row"], count: Tensor) -> Tensor:
    """Mean of ``values`` over the ``valid`` rows (``where``, not a product, so
    that a non-finite value in a padding row cannot leak into the result)."""
    return torch.where(valid, values, 0.0).sum() / count


def ppo_loss(
    output: AgentOutput,
    minibatch: dict[str, Tensor],
    settings: LossWeights,
    weight: Float[Tensor, "row"] | None,
) -> tuple[Tensor, Float[Tensor, "4"]]:
    """The PPO loss of a minibatch (PyTorch operations) and its four reported
    means (:data:`LOSS_NAMES`).

    ``minibatch`` holds the minibatch's ``node``, ``decision``, ``decision_allowed``,
    ``old_log_prob``, ``advantage`` and ``target``. ``weight``: 0 marks padding
    rows; ``None``: every row is real (the plain path's formulas, with fewer
    operations).
    """
    log_prob, entropy, decision_entropy = action_log_prob(
        output, minibatch["node"], minibatch["decision"], minibatch["decision_allowed"]
    )
    advantage = minibatch["advantage"]
    if weight is None:
        mean: Callable[[Tensor], Tensor] = Tensor.mean
        if settings.normalize_advantage and len(advantage) > 1:
            advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
    else:
        valid, count = weight > 0, weight.sum()

        def mean(values: Tensor) -> Tensor:
            return masked_mean(values, valid, count)

        if settings.normalize_advantage:
            average = mean(advantage)
            spread = torch.where(valid, (advantage - average).pow(2), 0.0).sum()
            std = (spread / (count - 1).clamp_min(1.0)).sqrt()
            advantage = torch.where(
                count > 1, (advantage - average) / (std + 1e-8), advantage
            )
    ratio = (log_prob - minibatch["old_log_prob"]).exp()
    clipped = ratio.clamp(1 - settings.clip_epsilon, 1 + settings.clip_epsilon)
    surrogate = torch.minimum(ratio * advantage, clipped * advantage)
    policy_loss = -mean(surrogate)
    value_loss = mean((output.value - minibatch["target"]).pow(2))
    entropy_mean = mean(entropy)
    loss = (
        policy_loss
        + settings.value_coefficient * value_loss
        - settings.entropy_coefficient * entropy_mean
    )
    reported = torch.stack(
        [
            policy_loss,
            value_loss,
            entropy_mean,
            mean(decision_entropy),
        ]
    )
    return loss, reported
