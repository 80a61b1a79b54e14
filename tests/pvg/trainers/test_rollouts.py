"""The lean collector equals TorchRL's rollout of the same environment and seeds."""

from __future__ import annotations

import pytest
import torch

from pvg_pipeline.pvg.protocols import Rewards, build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import AgentArchitecture
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import AgentSpec, build_agents
from pvg_pipeline.pvg.scenarios.graph_isomorphism.environment import (
    GraphIsomorphismEnv,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import MultiAgentPolicy
from pvg_pipeline.pvg.trainers.rollouts import collect

SPEC = AgentSpec(
    architecture=AgentArchitecture(num_gnn_layers=1, d_gnn=8, d_transformer=8)
)


@pytest.mark.parametrize("name", ["pvg", "debate", "merlin_arthur"])
def test_fast_collection_matches_torchrl_rollout(small_pairs, name):
    protocol = (
        build_protocol(name, max_message_rounds=4)
        if name != "merlin_arthur"
        else build_protocol(name)
    )
    torch.manual_seed(0)
    agents = build_agents(protocol, SPEC, SPEC, 9)
    for agent in agents.values():
        agent.eval()
    policy = MultiAgentPolicy(agents, protocol)
    rewards = Rewards(1.0, -4.0, -16.0, 8.0, 2.0)

    fast_env = GraphIsomorphismEnv(small_pairs, protocol, rewards, 12, seed=4)
    torch.manual_seed(1)
    with torch.no_grad():
        fast = collect(fast_env, policy, 10, 0.95)

    plain_env = GraphIsomorphismEnv(small_pairs, protocol, rewards, 12, seed=4)
    torch.manual_seed(1)
    with torch.no_grad():
        plain = plain_env.rollout(10, policy, break_when_any_done=False).transpose(0, 1)

    for key in (
        "node",
        "decision",
        "log_prob",
        "value",
        "active",
        "round",
        "message_history",
        "adjacency",
    ):
        torch.testing.assert_close(fast.data[key], plain[key], msg=key)
    torch.testing.assert_close(fast.reward, plain["next", "reward"])
    torch.testing.assert_close(fast.done, plain["next", "done"].squeeze(-1))
    assert fast.done.any()
    assert fast.outcomes.count == int(fast.done.sum())
