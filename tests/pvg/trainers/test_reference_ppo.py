"""The reference implementation's PPO settings: the smooth L1 value loss in every
formulation of the loss, and one optimiser shared by all agents."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch.nn import functional

from pvg_pipeline.accelerate.cpu import loss as cpu_loss
from pvg_pipeline.accelerate.cpu.kernels import load_extension
from pvg_pipeline.pvg.protocols import Rewards, build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import AgentSpec, build_agents
from pvg_pipeline.pvg.trainers import ppo
from pvg_pipeline.pvg.trainers.fast.padded_minibatches import NETWORK_KEYS
from pvg_pipeline.pvg.trainers.ppo_loss import (
    explicit_gradient_ppo_loss,
    loss_constants,
    ppo_loss,
)
from pvg_pipeline.pvg.trainers.run import run_training
from pvg_pipeline.pvg.trainers.shared_optimizer import update_agents_jointly
from tests.pvg.scenarios.calls import record_calls
from tests.pvg.trainers.collection import CONFIG
from tests.pvg.trainers.loss_cases import SETTINGS, fields, leaves, minibatch
from tests.pvg.trainers.test_training import TINY, _easy_pairs
from tests.pvg.trainers.test_update_step import _flat, _update_both_ways

SMOOTH = replace(SETTINGS, value_loss="smooth_l1", value_coefficient=1.0)
CPU = torch.device("cpu")


def _gradients(output, data, settings, weight, explicit):
    output = leaves(output)
    if explicit:
        constants = loss_constants(settings, CPU)
        loss, reported = explicit_gradient_ppo_loss(
            output, data, settings, weight, constants
        )
    else:
        loss, reported = ppo_loss(output, data, settings, weight)
    (3.0 * loss).backward()
    return loss, reported, [None if t is None else t.grad for t in fields(output)]


@pytest.mark.parametrize("verifier", [True, False])
def test_smooth_l1_is_torchs_and_its_explicit_gradient_is_autogradss(verifier):
    output, data = minibatch(128, verifier, spread=2.0)
    with torch.no_grad():
        output.value.mul_(2.0)  # errors on both sides of |e| = 1
    error = (output.value - data["target"]).detach()
    assert (error.abs() < 1).any() and (error.abs() > 1).any()
    weight = (torch.arange(128) < 100).float()
    loss, reported, grads = _gradients(output, data, SMOOTH, weight, explicit=True)
    ref_loss, ref_reported, ref_grads = _gradients(
        output, data, SMOOTH, weight, explicit=False
    )
    expected = functional.smooth_l1_loss(
        output.value[:100], data["target"][:100], beta=1.0
    )
    torch.testing.assert_close(reported[1], expected.detach())
    torch.testing.assert_close(ref_reported[1], expected.detach())
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for grad, reference in zip(grads, ref_grads, strict=True):
        if reference is None:
            assert grad is None
            continue
        torch.testing.assert_close(grad, reference, rtol=1e-4, atol=1e-7)
    # d/dv = value_coefficient * clamp(e, -1, 1) / rows, times the 3 passed back.
    slope = 3.0 * error.clamp(-1, 1) * weight / 100
    torch.testing.assert_close(grads[2], slope, rtol=1e-5, atol=1e-7)
    mse = _gradients(output, data, SETTINGS, weight, explicit=True)
    assert not torch.allclose(mse[1][1], reported[1])


def test_an_unknown_value_loss_is_refused():
    with pytest.raises(ValueError, match="value_loss 'huber'"):
        replace(SETTINGS, value_loss="huber")
    with pytest.raises(ValueError, match="value_loss 'huber'"):
        ppo.PPOConfig(value_loss="huber")


def test_the_fused_loss_kernel_declines_smooth_l1():
    output, _ = minibatch(8, True)
    assert not cpu_loss.fusable(output, "smooth_l1")
    assert cpu_loss.fusable(output, "mse") == (load_extension() is not None)


@pytest.mark.parametrize("fixed_shape", [False, True])
def test_smooth_l1_updates_match_the_plain_update(collection, monkeypatch, fixed_shape):
    """The trainer's updates (eager CPU steps, padded steps) with smooth L1 give
    the plain update's losses and parameters; the fused loss kernel stays unused."""
    config = replace(CONFIG, value_loss="smooth_l1", value_coefficient=1.0)
    calls = record_calls(monkeypatch, cpu_loss, "fused_ppo_loss")
    plain_agents, plain_losses, fast_agents, losses, updaters = _update_both_ways(
        collection, config, fixed_shape
    )
    assert calls == []
    for updater in updaters.values():
        updater.release()
    mse_losses = _update_both_ways(collection, CONFIG, fixed_shape)[1]
    start = collection[0]
    for name in start:
        assert losses[name] == pytest.approx(plain_losses[name], rel=1e-4, abs=1e-6)
        assert plain_losses[name]["value_loss"] != mse_losses[name]["value_loss"]
        step = _flat(plain_agents[name]) - _flat(start[name])
        gap = (_flat(fast_agents[name]) - _flat(plain_agents[name])).norm()
        assert step.norm() > 0 and gap / step.norm() < 1e-2


def _plain_update(agents, collection, config, optimizers):
    _, experience, advantages, returns = collection
    shuffle = torch.Generator().manual_seed(1)
    return ppo.update_agents(
        agents, optimizers, experience, advantages, returns, config, shuffle
    )


def test_shared_optimizer_runs_on_the_plain_path_with_one_adam(collection):
    shared = replace(CONFIG, shared_optimizer=True)
    agents = copy.deepcopy(collection[0])
    assert ppo.make_updaters(agents, agents, shared) == {}
    optimizers = ppo.make_optimizers(agents, shared)
    assert len({id(o) for o in optimizers.values()}) == 1 and set(optimizers) == set(
        agents
    )
    with pytest.raises(ValueError, match="one optimiser for every agent"):
        _plain_update(agents, collection, shared, ppo.make_optimizers(agents, CONFIG))


def _joint_update(collection, concurrent):
    config = replace(CONFIG, shared_optimizer=True)
    agents = copy.deepcopy(collection[0])
    losses = update_agents_jointly(
        agents,
        ppo.make_optimizers(agents, config),
        *collection[1:],
        config,
        torch.Generator().manual_seed(1),
        concurrent=concurrent,
    )
    return losses, agents


def test_joint_clipping_differs_from_one_optimiser_per_agent(collection):
    """The summed gradient is clipped as one vector, so the joint update is not
    what one Adam per agent (each gradient clipped alone) gives."""
    agents = copy.deepcopy(collection[0])
    optimizers = ppo.make_optimizers(agents, CONFIG)
    _plain_update(agents, collection, CONFIG, optimizers)
    _, joint = _joint_update(collection, concurrent=False)
    for name, agent in joint.items():
        assert not torch.equal(_flat(agent), _flat(collection[0][name]))
        assert not torch.allclose(_flat(agent), _flat(agents[name]))


def test_concurrent_joint_steps_are_reproducible_and_match(collection):
    threads = torch.get_num_threads()
    first, first_agents = _joint_update(collection, concurrent=True)
    assert torch.get_num_threads() == threads  # restored after the worker threads
    again, again_agents = _joint_update(collection, concurrent=True)
    sequential, sequential_agents = _joint_update(collection, concurrent=False)
    assert first == again
    for name, agent in first_agents.items():
        assert torch.equal(_flat(agent), _flat(again_agents[name]))
        assert first[name] == pytest.approx(sequential[name], rel=1e-4, abs=1e-6)
        step = _flat(sequential_agents[name]) - _flat(collection[0][name])
        gap = (_flat(agent) - _flat(sequential_agents[name])).norm() / step.norm()
        assert gap < 1e-2


def test_a_shared_body_gets_one_step_with_the_jointly_clipped_sum(collection):
    _, experience, advantages, returns = collection
    protocol = build_protocol("pvg", max_message_rounds=6)
    torch.manual_seed(0)
    agents = build_agents(protocol, TINY, TINY, 8, shared_body=True)
    for agent in agents.values():
        agent.eval()
    config = replace(CONFIG, epochs=1, minibatch_size=10_000, shared_optimizer=True)
    # The expected gradient: the sum of the agents' gradients (each over all its
    # steps), clipped as one vector.
    body = agents["prover"].body
    every = {id(p): p for a in agents.values() for p in a.parameters()}
    expected = {key: torch.zeros_like(p) for key, p in every.items()}
    for index, agent in enumerate(agents.values()):
        acted = experience.data["active"][..., index]
        samples = experience.data[acted]
        data = {
            "node": samples["node"][:, index],
            "decision": samples["decision"],
            "decision_allowed": samples["decision_allowed"],
            "old_log_prob": samples["log_prob"][:, index],
            "advantage": advantages[..., index][acted],
            "target": returns[..., index][acted],
        }
        output = agent(*(samples[key] for key in NETWORK_KEYS))
        loss, _ = ppo_loss(output, data, config.loss_weights(), None)
        agent.zero_grad(set_to_none=True)
        loss.backward()
        for p in agent.parameters():
            if p.grad is not None:
                expected[id(p)] += p.grad
    norm = torch.stack([g.norm() for g in expected.values()]).norm()
    assert norm > config.max_grad_norm  # so that the clipping matters
    scale = config.max_grad_norm / (norm + 1e-6)
    optimizers = ppo.make_optimizers(agents, config)
    optimizer = optimizers["prover"]
    body_count = sum(1 for _ in body.parameters())
    unique = {id(p) for a in agents.values() for p in a.parameters()}
    _plain_update(agents, collection, config, optimizers)
    assert len(optimizer.state) == len(unique)  # one Adam state per parameter
    assert all(int(optimizer.state[p]["step"]) == 1 for p in body.parameters())
    assert body_count > 0
    for key, p in every.items():
        torch.testing.assert_close(p.grad, expected[key] * scale, rtol=1e-4, atol=1e-6)


REFERENCE_ARCH = AgentSpec(
    architecture=replace(
        TINY.architecture,
        activation="tanh",
        node_selector_layers=2,
        round_in_heads=True,
        most_recent_message_flag=True,
    )
)


def _reference_run(pairs, root, iterations, resume=False):
    config = ppo.PPOConfig(
        iterations=iterations,
        num_envs=8,
        steps_per_iteration=4,
        epochs=2,
        minibatch_size=8,
        checkpoint_interval=2,
        value_loss="smooth_l1",
        value_coefficient=1.0,
        shared_optimizer=True,
    )
    protocol = build_protocol("debate", max_message_rounds=4)
    return run_training(
        "ppo", config, protocol, Rewards(), REFERENCE_ARCH, REFERENCE_ARCH, False,
        pairs, pairs, 0, CPU, root, resume,
    )  # fmt: skip


def test_reference_settings_train_and_resume_exactly(prime_table, tmp_path):
    """Every reference setting at once: training runs, and a run resumed from a
    checkpoint (one shared optimiser's state) equals an uninterrupted one."""
    train = _easy_pairs(prime_table, 200, 1)
    straight, history, _ = _reference_run(train, tmp_path / "a", 4)
    _reference_run(train, tmp_path / "b", 2)
    resumed, resumed_history, info = _reference_run(train, tmp_path / "b", 4, True)
    assert info["resumed_from_iteration"] == 2
    losses = [v for row in history for k, v in row.items() if "loss" in k]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    for name, entry in straight["agents"].items():
        assert entry["architecture"]["node_selector_layers"] == 2
        for key, value in entry["state_dict"].items():
            assert torch.equal(value, resumed["agents"][name]["state_dict"][key]), key
    assert [r["value_loss_verifier"] for r in history] == [
        r["value_loss_verifier"] for r in resumed_history
    ]
