"""Generalised advantage estimation for agents that act on some steps only.

Each agent's trajectory is its own active steps. For an action at step ``t0`` whose
agent next acts at ``t1`` in the same episode, the rewards ``r[t0..t1-1]`` belong to
that action and

``delta = sum_k gamma^(k-t0) r_k + gamma^(t1-t0) V(s_t1) - V(s_t0)``,
``A(t0) = delta + (gamma lambda)^(t1-t0) A(t1)``.

When the episode ends before ``t1`` there is no bootstrap. With an agent active at
every step this is exactly the usual GAE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float
from torch import Tensor

if TYPE_CHECKING:
    from pvg_pipeline.pvg.trainers.ppo_config import PPOConfig
    from pvg_pipeline.pvg.trainers.rollouts import Experience


def masked_gae(
    reward: Float[Tensor, "time batch agent"],
    value: Float[Tensor, "time batch agent"],
    done: Bool[Tensor, "time batch"],
    active: Bool[Tensor, "time batch agent"],
    final_value: Float[Tensor, "batch agent"],
    gamma: float,
    lam: float,
) -> tuple[Float[Tensor, "time batch agent"], Float[Tensor, "time batch agent"]]:
    """Advantages and returns at the steps where each agent acted (0 elsewhere).

    Parameters
    ----------
    reward
        Reward of each agent for step ``t`` (received after the step).
    value
        Value estimate of each agent at step ``t`` (used where ``active``).
    done
        Whether the episode ended with step ``t``.
    active
        Whether each agent acted at step ``t``.
    final_value
        Bootstrap value at the state after the last step, for unfinished episodes.
    gamma, lam
        Discount and GAE parameter, both per environment step.
    """
    steps = reward.shape[0]
    not_done = (~done).to(reward.dtype)[..., None]
    # Carries describe the segment from step t+1 to the agent's next action.
    next_value = final_value
    next_advantage = torch.zeros_like(final_value)
    pending_reward = torch.zeros_like(final_value)
    value_discount = torch.ones_like(final_value)
    advantage_discount = torch.zeros_like(final_value)
    advantages = torch.zeros_like(reward)
    for t in reversed(range(steps)):
        pending_reward = reward[t] + gamma * not_done[t] * pending_reward
        value_discount = gamma * not_done[t] * value_discount
        advantage_discount = gamma * lam * not_done[t] * advantage_discount
        delta = pending_reward + value_discount * next_value - value[t]
        advantage = delta + advantage_discount * next_advantage
        acted = active[t]
        advantages[t] = torch.where(acted, advantage, 0.0)
        next_value = torch.where(acted, value[t], next_value)
        next_advantage = torch.where(acted, advantage, next_advantage)
        pending_reward = torch.where(acted, 0.0, pending_reward)
        value_discount = torch.where(acted, 1.0, value_discount)
        advantage_discount = torch.where(acted, 1.0, advantage_discount)
    returns = torch.where(active, advantages + value, 0.0)
    return advantages, returns


def compute_advantages(
    experience: Experience, config: PPOConfig
) -> tuple[Tensor, Tensor]:
    """Per-agent GAE of a collection, bootstrapped with each agent's value from its
    own next turn (:attr:`Experience.bootstrap_value`)."""
    return gae_of(config, *advantage_inputs(experience))


def advantage_inputs(experience: Experience) -> tuple[Tensor, ...]:
    """The tensors :func:`gae_of` reads from a collection."""
    data = experience.data
    return (
        experience.reward,
        data["value"],
        experience.done,
        data["active"],
        experience.bootstrap_value,
    )


def gae_of(
    config: PPOConfig,
    reward: Tensor,
    value: Tensor,
    done: Tensor,
    active: Tensor,
    bootstrap_value: Tensor,
) -> tuple[Tensor, Tensor]:
    """:func:`masked_gae` with the run's discount and GAE lambda."""
    return masked_gae(
        reward, value, done, active, bootstrap_value, config.gamma, config.gae_lambda
    )
