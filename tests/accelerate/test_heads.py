"""The fused CPU kernel for the agents' heads computes what the PyTorch heads
compute, with the same gradients, and is used only where it applies."""

from __future__ import annotations

import pytest
import torch

from pvg_pipeline.accelerate.cpu import heads as cpu_heads
from pvg_pipeline.accelerate.cpu.kernels import load_extension
from pvg_pipeline.accelerate.cpu.layers import accelerate_agent
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import (
    AgentArchitecture,
    GameShape,
    GraphIsomorphismAgent,
)
from tests.pvg.scenarios.calls import record_calls
from tests.pvg.scenarios.gradients import assert_same_gradients
from tests.pvg.scenarios.threads import assert_same_on_one_and_two_threads

pytestmark = pytest.mark.skipif(
    load_extension() is None, reason="the fused CPU kernels could not build"
)

SHAPE = GameShape(max_nodes=11, max_rounds=8, visible_channels=(0,))


def _agent(is_verifier=True, activation="relu", d_mlp=64, d_model=16, seed=0):
    torch.manual_seed(seed)
    arch = AgentArchitecture(
        d_transformer=d_model, d_transformer_mlp=d_mlp, activation=activation
    )
    agent = accelerate_agent(GraphIsomorphismAgent(arch, SHAPE, is_verifier))
    with torch.no_grad():
        for parameter in agent.parameters():
            parameter.normal_(0.0, 0.5)
    return agent


def _inputs(batch, nodes, d_model=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, 2 + 2 * nodes, d_model, generator=generator)
    real_nodes = torch.rand(batch, 2 * nodes, generator=generator) > 0.3
    real_nodes[:, 0] = True  # every row has a node to choose
    return tokens, real_nodes


def _heads(agent, tokens, real_nodes):
    """The agent's heads on given transformer outputs (the agent's forward after
    its body)."""
    rounds = torch.zeros(len(tokens), dtype=torch.int64)
    output = agent.heads(tokens, real_nodes, rounds)
    return output.node_logits, output.decision_logits, output.value


def _outputs_and_gradients(agent, tokens, real_nodes, seed=1):
    agent.zero_grad()
    tokens = tokens.clone().requires_grad_(True)
    logits, decision, value = _heads(agent, tokens, real_nodes)
    generator = torch.Generator().manual_seed(seed)
    finite = torch.where(real_nodes, logits, 0.0)
    loss = (finite * torch.randn(finite.shape, generator=generator)).sum()
    loss = loss + (value * torch.randn(value.shape, generator=generator)).sum()
    if decision is not None:
        loss = (
            loss + (decision * torch.randn(decision.shape, generator=generator)).sum()
        )
    loss.backward()
    grads = {"tokens": tokens.grad}
    grads |= {n: p.grad for n, p in agent.named_parameters() if p.grad is not None}
    outputs = [logits, value] + ([] if decision is None else [decision])
    return [o.detach() for o in outputs], grads


# Verifier and prover; one chunk and several with a partial last one; other widths;
# an empty batch.
@pytest.mark.parametrize(
    ("is_verifier", "batch", "nodes", "d_mlp", "d_model"),
    [
        (True, 5, 11, 64, 16),
        (True, 0, 11, 64, 16),
        (True, 150, 11, 64, 16),
        (False, 70, 11, 64, 16),
        (True, 3, 1, 8, 8),
        (False, 9, 4, 32, 24),
    ],
)
def test_matches_the_pytorch_heads_with_gradients(
    monkeypatch, is_verifier, batch, nodes, d_mlp, d_model
):
    agent = _agent(is_verifier, d_mlp=d_mlp, d_model=d_model)
    tokens, real_nodes = _inputs(batch, nodes, d_model)
    calls = record_calls(monkeypatch, cpu_heads, "fused_heads")
    fused, fused_grads = _outputs_and_gradients(agent, tokens, real_nodes)
    assert calls == [1], "the heads did not use the fused kernel"
    monkeypatch.setenv(cpu_heads.SWITCH, "0")
    reference, grads = _outputs_and_gradients(agent, tokens, real_nodes)
    assert calls == [1]
    for got, want in zip(fused, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.isneginf(fused[0][~real_nodes]).all()
    assert_same_gradients(fused_grads, grads)
    assert ("decision_head.0.weight" in grads) == is_verifier
    assert {"tokens", "node_head.weight", "value_head.2.bias"} <= set(grads)


def test_without_gradients_equals_the_pytorch_heads(monkeypatch):
    agent = _agent()
    tokens, real_nodes = _inputs(40, 11)
    calls = record_calls(monkeypatch, cpu_heads, "fused_heads")
    with torch.no_grad():
        fused = _heads(agent, tokens, real_nodes)
        monkeypatch.setenv("PVG_FUSED_CPU_KERNELS", "0")
        reference = _heads(agent, tokens, real_nodes)
    assert calls == [1]
    for got, want in zip(fused, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_not_used_where_it_does_not_apply(monkeypatch):
    tokens, real_nodes = _inputs(4, 11)
    assert not cpu_heads.fusable(_agent(activation="tanh"), tokens)
    assert not cpu_heads.fusable(_agent().double(), tokens.double())
    assert not cpu_heads.fusable(_agent(d_mlp=12), tokens)
    monkeypatch.setenv(cpu_heads.SWITCH, "0")
    assert not cpu_heads.fusable(_agent(), tokens)
    monkeypatch.delenv(cpu_heads.SWITCH)
    assert cpu_heads.fusable(_agent(), tokens)


def test_same_on_one_and_two_threads():
    agent = _agent()
    tokens, real_nodes = _inputs(200, 11)

    def compute():
        outputs, grads = _outputs_and_gradients(agent, tokens, real_nodes)
        return [*outputs, *grads.values()]

    assert_same_on_one_and_two_threads(compute)
