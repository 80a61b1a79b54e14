"""What a PPO iteration did to each agent, and how the agents do on held-out pairs.

Computed every ``eval_interval`` iterations (they cost a forward pass or a played
test split, not worth paying every iteration):

- per agent, after the update: the approximate KL divergence between the policy
  that collected the iteration's experience and the updated one (the
  ``(r - 1) - log r`` estimator), the fraction of the agent's samples whose
  probability ratio left the clipping range, and the explained variance of the
  value head on the iteration's returns;
- the greedy evaluation of the whole test split
  (:func:`~pvg_pipeline.pvg.evaluation.learning_metrics`), prefixed ``test_``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pvg_pipeline.pvg import evaluation
from pvg_pipeline.pvg.protocols import Protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import action_log_prob
from pvg_pipeline.pvg.trainers.rollouts import Experience


def update_diagnostics(
    agents: Mapping[str, nn.Module],
    experience: Experience,
    returns: Tensor,
    clip_epsilon: float,
) -> dict[str, float]:
    """``approx_kl_<agent>``, ``clip_fraction_<agent>`` and
    ``explained_variance_<agent>`` of the agents with parameters, on the samples
    where each acted (agents in protocol order, as the experience's columns)."""
    found: dict[str, float] = {}
    data = experience.data
    with torch.no_grad():
        for index, (name, agent) in enumerate(agents.items()):
            if not any(True for _ in agent.parameters()):
                continue
            acted = data["active"][..., index]
            samples = data[acted]
            if samples.batch_size[0] == 0:
                continue
            output = agent(
                samples["adjacency"],
                samples["node_mask"],
                samples["message_history"],
                samples["round"],
            )
            log_prob, _, _ = action_log_prob(
                output,
                samples["node"][:, index],
                samples["decision"],
                samples["decision_allowed"],
            )
            log_ratio = log_prob - samples["log_prob"][:, index]
            ratio = log_ratio.exp()
            found[f"approx_kl_{name}"] = float(((ratio - 1) - log_ratio).mean())
            found[f"clip_fraction_{name}"] = float(
                ((ratio - 1).abs() > clip_epsilon).float().mean()
            )
            found[f"explained_variance_{name}"] = explained_variance(
                samples["value"][:, index], returns[acted][:, index]
            )
    return found


def explained_variance(prediction: Tensor, target: Tensor) -> float:
    """``1 - Var(target - prediction) / Var(target)``: 1 is a perfect value head,
    0 no better than a constant, negative worse; NaN if the target is constant."""
    variance = target.var(unbiased=False)
    if target.numel() < 2 or float(variance) == 0.0:
        return float("nan")
    return float(1 - (target - prediction).var(unbiased=False) / variance)


def held_out_metrics(
    agents: Mapping[str, nn.Module],
    protocol: Protocol,
    pairs: Mapping[str, Tensor],
    device: torch.device,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Greedy play of every test pair; learning metrics prefixed ``test_``.

    The caller's random-number generators are left as they were, so a run with
    periodic evaluations draws the same samples as one without.
    """
    episodes = evaluation.play_episodes(
        agents,
        protocol,
        pairs,
        deterministic=True,
        batch_size=batch_size,
        device=device,
    )
    return {
        f"test_{key}": value
        for key, value in evaluation.learning_metrics(episodes).items()
    }
