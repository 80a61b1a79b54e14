"""Observation normalisation: statistics of the agents' inputs under random play.

Before PPO starts, agents built with ``observation_normalisation`` get one mean and
one standard deviation of their message features (every real node of every state),
measured while every agent acts uniformly at random, as the reference
implementation's observation normalisation does. The statistics are buffers of the
agent, so checkpoints and saved agents carry them and a resumed run does not fit
them again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pvg_pipeline.pvg.protocols import VERIFIER, Protocol, Rewards
from pvg_pipeline.pvg.scenarios.graph_isomorphism.environment import (
    GraphIsomorphismEnv,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import (
    MultiAgentPolicy,
    RandomAgent,
)
from pvg_pipeline.pvg.trainers.rollouts import collect

logger = logging.getLogger(__name__)

#: Steps of random play collected at once (bounds the memory the fit needs).
_CHUNK = 32


def fit_observation_statistics(
    agents: Mapping[str, nn.Module],
    pairs: Mapping[str, Tensor],
    protocol: Protocol,
    rewards: Rewards,
    num_envs: int,
    steps: int,
    seed: int,
    device: torch.device,
) -> dict[str, tuple[float, float]]:
    """Set the normalising agents' ``observation_mean`` / ``observation_std``.

    ``steps`` rounds of random play in ``num_envs`` environments of their own
    (seeded from ``seed``; the global random state is left as it was). Returns
    the fitted ``(mean, std)`` per agent; nothing for agents without
    normalisation.
    """
    fitted = {
        name: agent
        for name, agent in agents.items()
        if getattr(agent, "observation_normalisation", False)
    }
    if not fitted:
        return {}
    totals = {name: torch.zeros(3, dtype=torch.float64) for name in fitted}
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        env = GraphIsomorphismEnv(
            pairs, protocol, rewards, num_envs, seed=seed, device=device
        )
        random_play = MultiAgentPolicy(
            {name: RandomAgent(name == VERIFIER) for name in protocol.agents},
            protocol,
        )
        for start in range(0, steps, _CHUNK):
            states = collect(env, random_play, min(_CHUNK, steps - start), 1.0).data
            history = states["message_history"].flatten(0, 1)
            rounds = states["round"].flatten(0, 1)
            real = states["node_mask"].flatten(0, 1)
            for name, agent in fitted.items():
                values = agent.message_features(history, rounds)[real].double()
                count = values.new_tensor(float(values.numel()))
                totals[name] += torch.stack(
                    [count, values.sum(), values.square().sum()]
                ).cpu()
    statistics = {}
    for name, agent in fitted.items():
        count, total, squares = totals[name].tolist()
        mean = total / count
        std = math.sqrt(max(squares / count - mean * mean, 0.0))
        std = std if std > 1e-6 else 1.0  # a constant input: leave it unscaled
        agent.observation_mean.fill_(mean)
        agent.observation_std.fill_(std)
        statistics[name] = (mean, std)
        logger.info(
            "observation statistics of %s: mean %.4f, std %.4f", name, mean, std
        )
    return statistics
