"""The fixed-shape (CUDA-graph ready) PPO update agrees with the plain update."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from pvg_pipeline.pvg.protocols import Rewards, build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import build_agents
from pvg_pipeline.pvg.scenarios.graph_isomorphism.environment import (
    GraphIsomorphismEnv,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import MultiAgentPolicy
from pvg_pipeline.pvg.trainers import ppo
from pvg_pipeline.pvg.trainers.rollouts import collect
from pvg_pipeline.pvg.trainers.update_step import FlatParameters, flattenable
from tests.pvg.trainers.test_training import SMALL, _easy_pairs

CONFIG = ppo.PPOConfig(num_envs=24, steps_per_iteration=6, epochs=3, minibatch_size=16)


@pytest.fixture(scope="module")
def collection(prime_table):
    pairs = _easy_pairs(prime_table, 200, 3)
    protocol = build_protocol("pvg", max_message_rounds=6)
    torch.manual_seed(0)
    agents = build_agents(protocol, SMALL, SMALL, 8)
    for agent in agents.values():
        agent.eval()
    env = GraphIsomorphismEnv(pairs, protocol, Rewards(), CONFIG.num_envs, seed=0)
    with torch.no_grad():
        experience = collect(env, MultiAgentPolicy(agents, protocol), 6)
        advantages, returns = ppo.compute_advantages(experience, agents, CONFIG)
    return agents, experience, advantages, returns


def _update_both_ways(collection, config, fixed_shape, compile_loss=False):
    """Plain and fixed-shape updates from the same agents and permutations."""
    agents, experience, advantages, returns = collection
    plain_agents = copy.deepcopy(agents)
    optimizers = {
        n: torch.optim.Adam(a.parameters(), lr=config.learning_rate)
        for n, a in plain_agents.items()
    }
    plain_losses = ppo.update_agents(
        plain_agents,
        optimizers,
        experience,
        advantages,
        returns,
        config,
        torch.Generator().manual_seed(1),
    )
    fast_agents = copy.deepcopy(agents)
    updaters = ppo.make_updaters(fast_agents, fast_agents, config)
    for updater in updaters.values():
        updater.fixed_shape = fixed_shape  # padded minibatches, as in the graph
        updater.compile_loss = compile_loss
    fast_losses = ppo.update_agents_fixed_shape(
        updaters,
        experience,
        advantages,
        returns,
        config,
        torch.Generator().manual_seed(1),
    )
    return plain_agents, plain_losses, fast_agents, fast_losses, updaters


@pytest.mark.parametrize(
    "fixed_shape, compile_loss",
    [
        (False, False),
        (True, False),
        pytest.param(True, True, marks=pytest.mark.slow, id="compiled"),
    ],
)
def test_one_step_has_the_plain_gradient(collection, fixed_shape, compile_loss):
    one_step = replace(CONFIG, epochs=1, minibatch_size=10_000)
    plain_agents, plain_losses, _, fast_losses, updaters = _update_both_ways(
        collection, one_step, fixed_shape, compile_loss
    )
    for name, updater in updaters.items():
        assert fast_losses[name] == pytest.approx(
            plain_losses[name], rel=1e-5, abs=1e-6
        )
        # The clipped gradient of the single step stays in .grad on both paths.
        plain_grad = _flat(plain_agents[name], grad=True)
        torch.testing.assert_close(
            updater.flat.parameter.grad, plain_grad, rtol=1e-4, atol=1e-7
        )
        assert plain_grad.norm() > 0
        compiled = updater._loss != updater._losses
        assert compiled == compile_loss
        updater.release()


@pytest.mark.parametrize("fixed_shape", [False, True])
def test_fixed_shape_update_matches_the_plain_update(collection, fixed_shape):
    agents, experience, _, _ = collection
    plain_agents, plain_losses, fast_agents, losses, updaters = _update_both_ways(
        collection, CONFIG, fixed_shape
    )
    for updater in updaters.values():
        updater.release()
    # Several minibatches per epoch, the last one short: padding is exercised.
    active = experience.data["active"].reshape(-1, 2).sum(0)
    assert all(CONFIG.minibatch_size < int(n) for n in active)
    assert all(int(n) % CONFIG.minibatch_size for n in active)
    for name in agents:
        assert losses[name] == pytest.approx(plain_losses[name], rel=1e-4, abs=1e-6)
        # Adam turns rounding-level differences of near-zero gradients into
        # lr-sized steps, so compare the whole update, not element by element.
        start = _flat(agents[name])
        fast_step = _flat(fast_agents[name]) - start
        plain_step = _flat(plain_agents[name]) - start
        assert plain_step.norm() > 0
        assert (fast_step - plain_step).norm() / plain_step.norm() < 1e-2


def _flat(agent, grad=False):
    return torch.cat(
        [(p.grad if grad else p).detach().reshape(-1) for p in agent.parameters()]
    )


def test_flat_parameters_share_storage_and_release_it():
    agents = build_agents(build_protocol("pvg"), SMALL, SMALL, 8)
    prover = agents["prover"]
    before = {k: v.clone() for k, v in prover.state_dict().items()}
    flat = FlatParameters(prover)
    with torch.no_grad():
        flat.parameter.add_(1.0)
    for key, value in prover.named_parameters():
        torch.testing.assert_close(value, before[key] + 1.0)
    flat.release()
    with torch.no_grad():
        flat.parameter.add_(1.0)  # no longer reaches the module
    for key, value in prover.named_parameters():
        torch.testing.assert_close(value, before[key] + 1.0)
        assert value.grad is None


def test_shared_bodies_are_left_to_the_plain_path():
    protocol = build_protocol("pvg")
    shared = build_agents(protocol, SMALL, SMALL, 8, shared_body=True)
    assert not flattenable(shared)
    assert ppo.make_updaters(shared, shared, CONFIG) == {}
    assert flattenable(build_agents(protocol, SMALL, SMALL, 8))


def _fast_update(collection, concurrent):
    agents, experience, advantages, returns = collection
    agents = copy.deepcopy(agents)
    updaters = ppo.make_updaters(agents, agents, CONFIG)
    losses = ppo.update_agents_fixed_shape(
        updaters,
        experience,
        advantages,
        returns,
        CONFIG,
        torch.Generator().manual_seed(1),
        concurrent=concurrent,
    )
    for updater in updaters.values():
        updater.release()
    return agents, losses


def test_concurrent_agent_updates_are_reproducible_and_match(collection):
    threads = torch.get_num_threads()
    first, first_losses = _fast_update(collection, concurrent=True)
    assert torch.get_num_threads() == threads  # restored after the worker threads
    again, again_losses = _fast_update(collection, concurrent=True)
    sequential, sequential_losses = _fast_update(collection, concurrent=False)
    assert first_losses == again_losses
    start = collection[0]
    for name in start:
        assert torch.equal(_flat(first[name]), _flat(again[name]))
        assert first_losses[name] == pytest.approx(
            sequential_losses[name], rel=1e-4, abs=1e-6
        )
        step = _flat(sequential[name]) - _flat(start[name])
        gap = (_flat(first[name]) - _flat(sequential[name])).norm() / step.norm()
        assert gap < 1e-2
