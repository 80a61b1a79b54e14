"""The fused CPU PPO loss computes the PyTorch loss and its gradients, and the
trainer uses it only on its eager CPU path."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pvg_pipeline.accelerate.cpu import loss as cpu_loss
from pvg_pipeline.accelerate.cpu.kernels import load_extension
from pvg_pipeline.pvg.protocols import Rewards, build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import build_agents
from pvg_pipeline.pvg.scenarios.graph_isomorphism.environment import (
    GraphIsomorphismEnv,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import MultiAgentPolicy
from pvg_pipeline.pvg.trainers import ppo
from pvg_pipeline.pvg.trainers.fast.update_step import AgentUpdater
from pvg_pipeline.pvg.trainers.ppo_loss import LOSS_KEYS, ppo_loss
from pvg_pipeline.pvg.trainers.rollouts import collect
from tests.pvg.scenarios.calls import record_calls
from tests.pvg.trainers.loss_cases import SETTINGS, fields, leaves, minibatch
from tests.pvg.trainers.test_training import SMALL, _easy_pairs

pytestmark = pytest.mark.skipif(
    load_extension() is None, reason="the fused CPU kernels could not build"
)


def _loss_and_gradients(output, data, settings, fused):
    output = leaves(output)
    if fused:
        loss, reported = cpu_loss.fused_ppo_loss(
            output,
            *(data[key] for key in LOSS_KEYS),
            settings.clip_epsilon,
            settings.value_coefficient,
            settings.entropy_coefficient,
            settings.normalize_advantage,
        )
    else:
        loss, reported = ppo_loss(output, data, settings, None)
    (3.0 * loss).backward()  # a gradient other than 1 reaches the backward pass
    grads = [None if t is None else t.grad for t in fields(output)]
    return loss, reported, grads


@pytest.mark.parametrize(
    "rows, verifier, normalize, spread",
    [
        (256, True, True, 1.0),
        (256, False, True, 1.0),
        (100, True, False, 3.0),
        (7, False, False, 0.1),
        (1, True, True, 1.0),
    ],
)
def test_matches_the_pytorch_loss_and_its_gradients(rows, verifier, normalize, spread):
    output, data = minibatch(rows, verifier, spread=spread)
    settings = replace(SETTINGS, normalize_advantage=normalize)
    loss, reported, grads = _loss_and_gradients(output, data, settings, fused=True)
    loss_ref, reported_ref, grads_ref = _loss_and_gradients(
        output, data, settings, fused=False
    )
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(reported, reported_ref, rtol=1e-5, atol=1e-6)
    for grad, reference, name in zip(
        grads, grads_ref, ("node", "decision", "value"), strict=True
    ):
        if reference is None:
            assert grad is None, name
            continue
        assert reference.abs().max() > 0, name
        torch.testing.assert_close(grad, reference, rtol=1e-4, atol=1e-7, msg=name)
    assert reported[0].requires_grad is False


def test_mutating_an_input_changes_the_fused_result():
    """The comparison above can fail: the kernel reads every input."""
    output, data = minibatch(64, True)
    base, _, base_grads = _loss_and_gradients(output, data, SETTINGS, fused=True)
    for key in LOSS_KEYS:
        changed = dict(data)
        value = data[key]
        if value.dtype == torch.bool:
            changed[key] = ~value
        elif value.dtype == torch.int64:
            changed[key] = (
                (value + 1) % 3 if key == "decision" else torch.zeros_like(value)
            )
        else:
            changed[key] = value + torch.linspace(0.5, 1.5, len(value))
        loss, _, grads = _loss_and_gradients(output, changed, SETTINGS, fused=True)
        assert not (
            torch.equal(loss, base) and torch.equal(grads[0], base_grads[0])
        ), key


def test_the_eager_cpu_step_uses_it_and_the_fixed_shape_step_does_not(
    monkeypatch, prime_table
):
    protocol = build_protocol("pvg", max_message_rounds=6)
    torch.manual_seed(0)
    agents = build_agents(protocol, SMALL, SMALL, 8)
    for agent in agents.values():
        agent.eval()
    env = GraphIsomorphismEnv(_easy_pairs(prime_table, 60, 3), protocol, Rewards(), 16)
    with torch.no_grad():
        experience = collect(env, MultiAgentPolicy(agents, protocol), 4, 0.95)
        advantages, returns = ppo.compute_advantages(experience, ppo.PPOConfig())
    updater = AgentUpdater(
        agents["verifier"],
        1,
        64,
        16,
        1e-3,
        SETTINGS,
        False,
        eager_loss=cpu_loss.eager_ppo_loss,
    )
    updater.load(
        experience.data.reshape(-1),
        advantages[..., 1].reshape(-1),
        returns[..., 1].reshape(-1),
    )
    calls = record_calls(monkeypatch, cpu_loss, "fused_ppo_loss")
    rows = experience.data["active"].reshape(-1, 2)[:, 1].nonzero().squeeze(1)[:16]
    fused, fused_reported = updater._losses(updater._frames, rows)
    assert len(calls) == 1
    monkeypatch.setenv(cpu_loss.SWITCH, "0")
    plain, plain_reported = updater._losses(updater._frames, rows)
    assert len(calls) == 1
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused_reported, plain_reported, rtol=1e-5, atol=1e-6)
    # Padded minibatches (the CUDA graph's shape) do not use it.
    monkeypatch.delenv(cpu_loss.SWITCH)
    updater._step(rows, torch.ones(len(rows)))
    assert len(calls) == 1
