"""The bootstrap at the end of a collection uses each agent's value at its own turn.

Scripted agents whose value is ``base + round`` make every quantity computable by
hand: the verifier acts at even rounds, the prover at odd ones, a collection of one
step ends at the prover's turn.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pvg_pipeline.pvg.protocols import Decision, Rewards, build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import AgentOutput
from pvg_pipeline.pvg.scenarios.graph_isomorphism.environment import (
    GraphIsomorphismEnv,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import MultiAgentPolicy
from pvg_pipeline.pvg.trainers.advantages import masked_gae
from pvg_pipeline.pvg.trainers.ppo import PPOConfig, compute_advantages
from pvg_pipeline.pvg.trainers.rollouts import collect

GAMMA = 0.9
CONTINUE_REWARD = 0.5
VERIFIER_BASE, PROVER_BASE = 10.0, 100.0


class ScriptedAgent(nn.Module):
    """Never decides; value ``base + round``."""

    def __init__(self, base: float, is_verifier: bool) -> None:
        super().__init__()
        self.base = base
        self.is_verifier = is_verifier

    def forward(self, adjacency, node_mask, message_history, round_number):
        batch = node_mask.shape[0]
        logits = torch.zeros(node_mask.flatten(1).shape)
        logits = logits.masked_fill(~node_mask.flatten(1), float("-inf"))
        decision = torch.full((batch, len(Decision)), -1e9)
        decision[:, Decision.CONTINUE] = 0.0
        value = self.base + round_number.float()
        return AgentOutput(logits, decision if self.is_verifier else None, value)


def _pairs(count: int = 4, nodes: int = 3) -> dict[str, torch.Tensor]:
    adjacency = torch.zeros(count, 2, nodes, nodes, dtype=torch.bool)
    adjacency[:, :, 0, 1] = adjacency[:, :, 1, 0] = True
    return {
        "adjacency": adjacency,
        "sizes": torch.full((count,), nodes),
        "is_isomorphic": torch.ones(count, dtype=torch.bool),
    }


def _one_step(max_rounds: int):
    protocol = build_protocol("pvg", max_message_rounds=max_rounds, verifier_first=True)
    agents = {
        "prover": ScriptedAgent(PROVER_BASE, False),
        "verifier": ScriptedAgent(VERIFIER_BASE, True),
    }
    rewards = Rewards(verifier_continue=CONTINUE_REWARD, verifier_timeout=-1.0)
    env = GraphIsomorphismEnv(_pairs(), protocol, rewards, 2)
    with torch.no_grad():
        experience = collect(env, MultiAgentPolicy(agents, protocol), 1, GAMMA)
    config = PPOConfig(gamma=GAMMA, gae_lambda=0.95)
    return agents, experience, config


@pytest.mark.parametrize(
    "max_rounds, verifier_bootstrap",
    [
        # The prover acts at round 1 (no reward for the verifier), then the
        # verifier at round 2: gamma * V_verifier(round 2).
        (4, GAMMA * (VERIFIER_BASE + 2)),
        # Round 1 is the last: the prover's message ends the episode in a timeout.
        (2, -1.0),
    ],
)
def test_the_verifier_bootstraps_from_its_own_next_turn(max_rounds, verifier_bootstrap):
    agents, experience, config = _one_step(max_rounds)
    # The prover acts at the final state (round 1): its own value there.
    expected = torch.tensor([PROVER_BASE + 1, verifier_bootstrap])
    torch.testing.assert_close(experience.bootstrap_value, expected.expand(2, 2))

    advantages, returns = compute_advantages(experience, config)
    # The verifier acted at round 0 (value 10) and was paid for going on.
    by_hand = CONTINUE_REWARD + GAMMA * verifier_bootstrap - VERIFIER_BASE
    torch.testing.assert_close(advantages[0, :, 1], torch.full((2,), by_hand))
    torch.testing.assert_close(returns[0, :, 1], torch.full((2,), by_hand + 10.0))
    assert not advantages[0, :, 0].any()  # the prover did not act

    # Bootstrapping from every agent's value head at the final state (the
    # prover's turn, where the verifier never acts) gives another advantage.
    final = experience.final_observation
    off_turn = torch.stack(
        [
            agent(final["adjacency"], final["node_mask"], None, final["round"]).value
            for agent in agents.values()
        ],
        dim=-1,
    )
    wrong, _ = masked_gae(
        experience.reward,
        experience.data["value"],
        experience.done,
        experience.data["active"],
        off_turn,
        GAMMA,
        0.95,
    )
    assert not torch.allclose(wrong[0, :, 1], advantages[0, :, 1])


def test_episodes_carry_over_from_one_collection_to_the_next():
    """A second collection continues the episodes the first one left running."""
    protocol = build_protocol("pvg", max_message_rounds=6, verifier_first=True)
    agents = {
        "prover": ScriptedAgent(PROVER_BASE, False),
        "verifier": ScriptedAgent(VERIFIER_BASE, True),
    }
    env = GraphIsomorphismEnv(_pairs(), protocol, Rewards(verifier_continue=1.0), 2)
    policy = MultiAgentPolicy(agents, protocol)
    with torch.no_grad():
        first = collect(env, policy, 4, GAMMA)
        second = collect(env, policy, 4, GAMMA)
    assert first.data["round"][:, 0].tolist() == [0, 1, 2, 3]
    assert second.data["round"][:, 0].tolist() == [4, 5, 0, 1]
    # The episode that ended in the second collection counts the rewards of both:
    # three verifier turns paid 1, then the timeout.
    assert second.outcomes.count == 2
    assert second.outcomes.returns[:, 1].tolist() == [3.0 - 1.0] * 2
