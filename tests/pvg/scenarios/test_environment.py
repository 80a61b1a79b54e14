"""The TorchRL environment: specs, resets, sampling, random-agent rollouts."""

from __future__ import annotations

import itertools

import pytest
import torch
from torchrl.envs.utils import check_env_specs

from pvg_pipeline.pvg.protocols import PROTOCOLS, Rewards, build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import AgentSpec, build_agents
from pvg_pipeline.pvg.scenarios.graph_isomorphism.environment import (
    EpochSampler,
    GraphIsomorphismEnv,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import MultiAgentPolicy

REWARDS = Rewards(1.0, -4.0, -16.0, 8.0, 2.0)


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_check_env_specs(small_pairs, name):
    env = GraphIsomorphismEnv(small_pairs, build_protocol(name), REWARDS, batch_size=5)
    check_env_specs(env, seed=0)


def _allowed_rewards(protocol) -> set[float]:
    """Every sum of reward paths one agent can receive in one step."""
    verifier = {0.0, 1.0, -4.0, 8.0, -16.0, 8.0 - 16.0}
    prover = {0.0, 2.0}
    return verifier | prover


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_random_agents_play_hundreds_of_steps(small_pairs, name):
    protocol = build_protocol(name)
    env = GraphIsomorphismEnv(small_pairs, protocol, REWARDS, batch_size=16, seed=3)
    random = AgentSpec(kind="random")
    policy = MultiAgentPolicy(build_agents(protocol, random, random, 9), protocol)
    torch.manual_seed(0)
    rollout = env.rollout(300, policy, break_when_any_done=False)
    assert rollout.batch_size == (16, 300)
    rewards = set(rollout["next", "reward"].unique().tolist())
    assert rewards <= _allowed_rewards(protocol)
    assert rollout["next", "done"].any()
    # Padding nodes are never chosen by acting agents.
    node_mask = rollout["node_mask"].reshape(16, 300, -1)
    chosen = torch.gather(node_mask, 2, rollout["node"])
    assert chosen[rollout["active"]].all()
    # Inactive agents' log-probs are zero; the active mask is recorded per step.
    assert (rollout["log_prob"][~rollout["active"]] == 0).all()
    assert rollout["active"].any(dim=-1).all()


def test_episodes_reset_in_place_and_keep_running(small_pairs):
    protocol = build_protocol("pvg", max_message_rounds=4, min_message_rounds=0)
    env = GraphIsomorphismEnv(small_pairs, protocol, REWARDS, batch_size=8, seed=1)
    td = env.reset()
    before = env.state["pair_index"].clone()
    # Only env 0 decides (verifier acts at round 0 with decisions allowed).
    td["node"] = torch.zeros(8, 2, dtype=torch.int64)
    td["decision"] = torch.tensor([1] + [2] * 7)
    out = env.step(td)
    assert out["next", "done"].squeeze(-1).tolist() == [True] + [False] * 7
    observed = out["next"].clone()
    env.reset(out["next"].select().update({"_reset": out["next", "done"]}))
    assert env.state["round"].tolist() == [0] + [1] * 7
    assert (env.state["pair_index"][1:] == before[1:]).all()
    assert env.state["pair_index"][0] != before[0]
    # Observations handed out earlier are not modified by the reset.
    assert (out["next"].select(*observed.keys()) == observed).all()


def test_epoch_sampler_visits_each_row_once_per_epoch_and_reshuffles():
    sampler = EpochSampler(10, torch.Generator().manual_seed(0))
    first = sampler.take(10)
    second = torch.cat([sampler.take(3), sampler.take(7)])
    assert sorted(first.tolist()) == list(range(10))
    assert sorted(second.tolist()) == list(range(10))
    assert not torch.equal(first, second)
    assert sampler.epoch == 1


def test_same_seed_same_pairs(small_pairs):
    protocol = build_protocol("pvg")
    orders = []
    for _ in range(2):
        env = GraphIsomorphismEnv(small_pairs, protocol, REWARDS, batch_size=8, seed=9)
        env.reset()
        orders.append(env.state["pair_index"].clone())
    assert torch.equal(*orders)


def test_env_never_exposes_the_label(small_pairs):
    env = GraphIsomorphismEnv(small_pairs, build_protocol("pvg"), REWARDS, 4)
    keys = set(itertools.chain(env.reset().keys(True), env.observation_spec.keys(True)))
    assert not any("label" in str(k) or "is_isomorphic" in str(k) for k in keys)
