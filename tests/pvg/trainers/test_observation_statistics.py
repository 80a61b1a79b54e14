"""Observation normalisation: statistics from random play, used and kept."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from pvg_pipeline.pvg.protocols import Rewards, build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import AgentArchitecture
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import AgentSpec, build_agents
from pvg_pipeline.pvg.trainers.observation_statistics import (
    fit_observation_statistics,
)
from tests.pvg.trainers.test_training import _run

CPU = torch.device("cpu")
ARCH = AgentArchitecture(
    num_gnn_layers=1, d_gnn=8, d_gin_mlp=16, d_transformer=8, d_transformer_mlp=16
)
PLAIN = AgentSpec(architecture=ARCH)
NORMALISED = AgentSpec(architecture=replace(ARCH, observation_normalisation=True))


@pytest.fixture
def pairs(small_pairs):
    return small_pairs


def _nodes(pairs):
    return int(pairs["adjacency"].shape[-1])


def _observation(pairs, rounds=4):
    batch, n = 6, _nodes(pairs)
    history = torch.zeros(batch, rounds, 1, 2, n)
    history[:, 0, 0, 0, 3] = 1.0  # round 0: node 3 of the first graph
    history[:, 1, 0, 1, 5] = 1.0  # round 1: node 5 of the second graph
    sizes = pairs["sizes"][:batch]  # both graphs of a pair have this many nodes
    node_mask = (torch.arange(n) < sizes[:, None])[:, None, :].expand(-1, 2, -1)
    return (
        pairs["adjacency"][:batch],
        node_mask,
        history,
        torch.full((batch,), 2),
    )


def test_statistics_of_random_play_are_fitted_and_change_the_input(pairs):
    protocol = build_protocol("pvg", max_message_rounds=4)
    torch.manual_seed(0)
    agents = build_agents(protocol, NORMALISED, NORMALISED, _nodes(pairs))
    torch.manual_seed(0)
    plain = build_agents(protocol, PLAIN, PLAIN, _nodes(pairs))
    observation = _observation(pairs)
    # Unfitted, the statistics are the identity: the same network as without them.
    for name, agent in agents.items():
        plain[name].load_state_dict(agent.state_dict(), strict=False)
        assert torch.equal(
            agent(*observation).node_logits, plain[name](*observation).node_logits
        )
    torch.manual_seed(7)
    expected_draw = torch.rand(3)
    torch.manual_seed(7)
    statistics = fit_observation_statistics(
        agents, pairs, protocol, Rewards(), 16, 40, 3, CPU
    )
    assert torch.equal(torch.rand(3), expected_draw)  # the caller's draws unchanged
    assert set(statistics) == {"prover", "verifier"}
    for name, (mean, std) in statistics.items():
        # One-hot features: a fraction p of ones has standard deviation
        # sqrt(p (1 - p)); a few messages among 4 rounds x ~8 nodes.
        assert 0.005 < mean < 0.2
        assert std == pytest.approx(math.sqrt(mean * (1 - mean)), rel=1e-9)
        agent = agents[name]
        assert agent.observation_mean.item() == pytest.approx(mean)
        assert {"observation_mean", "observation_std"} <= set(agent.state_dict())
        assert not torch.equal(
            agent(*observation).node_logits, plain[name](*observation).node_logits
        )
    # Same seed, same statistics; agents without normalisation are left alone.
    again = build_agents(protocol, NORMALISED, PLAIN, _nodes(pairs))
    repeated = fit_observation_statistics(
        again, pairs, protocol, Rewards(), 16, 40, 3, CPU
    )
    assert repeated == {"prover": statistics["prover"]}


def test_a_resumed_run_keeps_its_statistics_and_equals_an_uninterrupted_one(
    pairs, tmp_path
):
    settings = {"spec": NORMALISED, "observation_normalisation_steps": 16}
    straight, _, _ = _run(pairs, tmp_path / "a", 4, **settings)
    _run(pairs, tmp_path / "b", 2, **settings)
    resumed, _, info = _run(pairs, tmp_path / "b", 4, resume=True, **settings)
    assert info["resumed_from_iteration"] == 2
    for name, entry in straight["agents"].items():
        weights = entry["state_dict"]
        assert weights["observation_std"].item() != 1.0  # fitted before training
        for key, tensor in weights.items():
            assert torch.equal(tensor, resumed["agents"][name]["state_dict"][key]), key
