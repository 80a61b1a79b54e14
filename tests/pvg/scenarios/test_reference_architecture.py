"""The architecture options of the reference implementation: what each changes,
that the defaults keep today's network, and that the fused CPU kernels step aside
for what they do not implement (same outputs and gradients as the plain model)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from pvg_pipeline.accelerate.cpu import gin as cpu_gin
from pvg_pipeline.accelerate.cpu import heads as cpu_heads
from pvg_pipeline.accelerate.cpu import tokens as cpu_tokens
from pvg_pipeline.accelerate.cpu import transformer as cpu_transformer
from pvg_pipeline.accelerate.cpu.kernels import load_extension
from pvg_pipeline.accelerate.cpu.layers import accelerate_agent, plain_agent
from pvg_pipeline.pvg.protocols import build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import (
    AgentArchitecture,
    GameShape,
    GraphIsomorphismAgent,
    _most_recent,
)
from tests.pvg.scenarios import test_agents
from tests.pvg.scenarios.calls import record_calls
from tests.pvg.scenarios.test_agents import _observation

ARCH = AgentArchitecture(num_gnn_layers=2)
SHAPE = GameShape(9, 8, (0,))
REFERENCE = {
    "activation": "tanh",
    "node_selector_layers": 2,
    "round_in_heads": True,
    "most_recent_message_flag": True,
}
#: Which fused kernels still run with each option (with the kernels built).
KERNELS_KEPT = {
    "activation": {"tokens"},
    "node_selector_layers": {"gin", "tokens", "transformer"},
    "round_in_heads": {"gin", "tokens", "transformer"},
    "most_recent_message_flag": {"gin", "tokens", "transformer", "heads"},
}
KERNELS = {
    "gin": (cpu_gin, "fused_gin"),
    "tokens": (cpu_tokens, "fused_tokens"),
    "transformer": (cpu_transformer, "fused_attention_block"),
    "heads": (cpu_heads, "fused_heads"),
}


def _agent(change: dict, is_verifier: bool = True) -> GraphIsomorphismAgent:
    torch.manual_seed(0)
    agent = GraphIsomorphismAgent(replace(ARCH, **change), SHAPE, is_verifier)
    with torch.no_grad():  # no zero biases: every parameter matters
        for parameter in agent.parameters():
            parameter.normal_(0.0, 0.25)
    return agent.eval()  # as the trainer keeps it


def _outputs_and_gradients(agent, td):
    agent.zero_grad()
    out = agent(td["adjacency"], td["node_mask"], td["message_history"], td["round"])
    generator = torch.Generator().manual_seed(1)
    logits = torch.where(td["node_mask"].flatten(1), out.node_logits, 0.0)
    outputs = [logits, out.value] + (
        [] if out.decision_logits is None else [out.decision_logits]
    )
    loss = sum((o * torch.randn(o.shape, generator=generator)).sum() for o in outputs)
    loss.backward()
    grads = {n: p.grad for n, p in agent.named_parameters() if p.grad is not None}
    return [o.detach() for o in outputs], grads


def test_defaults_keep_the_network():
    agent = GraphIsomorphismAgent(ARCH, SHAPE, is_verifier=True)
    assert isinstance(agent.node_head, nn.Linear)
    assert agent.value_head[0].in_features == 2 * ARCH.d_transformer
    assert agent.decision_head[0].in_features == 2 * ARCH.d_transformer
    assert agent.input.in_features == SHAPE.max_rounds + 1
    assert not any(isinstance(m, nn.Tanh) for m in agent.modules())


def test_each_option_changes_what_it_says():
    d = ARCH.d_transformer
    two_layers = GraphIsomorphismAgent(
        replace(ARCH, node_selector_layers=2, activation="tanh"), SHAPE, True
    )
    head = two_layers.node_head
    assert [type(m) for m in head] == [nn.Linear, nn.Tanh, nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[2].out_features) == (
        d,
        d,
        1,
    )
    assert not any(isinstance(m, nn.ReLU) for m in two_layers.modules())
    three = GraphIsomorphismAgent(replace(ARCH, node_selector_layers=3), SHAPE, True)
    assert sum(isinstance(m, nn.Linear) for m in three.node_head) == 3
    rounds = GraphIsomorphismAgent(replace(ARCH, round_in_heads=True), SHAPE, True)
    assert rounds.value_head[0].in_features == 2 * d + SHAPE.max_rounds + 1
    assert rounds.decision_head[0].in_features == 2 * d + SHAPE.max_rounds + 1
    shape = GameShape(9, 6, (0, 1))
    flag = GraphIsomorphismAgent(
        replace(ARCH, most_recent_message_flag=True), shape, True
    )
    assert flag.input.in_features == 6 * 2 + 2 + 1  # one flag per visible channel


def test_the_most_recent_message_is_the_previous_rounds():
    generator = torch.Generator().manual_seed(0)
    seen = (torch.rand(4, 5, 2, 2, 7, generator=generator) > 0.8).float()
    round_number = torch.tensor([0, 1, 3, 5])
    recent = _most_recent(seen, round_number)
    assert recent.shape == (4, 2, 7, 2)
    assert not recent[0].any()  # round 0: no message yet
    for row, previous in ((1, 0), (2, 2), (3, 4)):
        torch.testing.assert_close(recent[row], seen[row, previous].permute(1, 2, 0))


def test_the_flag_feeds_the_network(small_pairs):
    """After three rounds some nodes are flagged: the flag's input column matters."""
    td = _observation(small_pairs, build_protocol("pvg"), steps=3)
    agent = _agent({"most_recent_message_flag": True})
    base = _outputs_and_gradients(agent, td)[0]
    with torch.no_grad():
        agent.input.weight[:, -2].zero_()  # the flag's column (before the constant)
    assert not torch.allclose(_outputs_and_gradients(agent, td)[0][1], base[1])


def test_the_round_reaches_the_heads_only_with_round_in_heads(small_pairs):
    td = _observation(small_pairs, build_protocol("pvg"), steps=3)
    for round_in_heads in (False, True):
        agent = _agent({"round_in_heads": round_in_heads})
        with torch.no_grad():  # the body no longer sees the round
            agent.body.round_embedding.weight.zero_()
            values = [
                agent(
                    td["adjacency"],
                    td["node_mask"],
                    td["message_history"],
                    torch.full_like(td["round"], r),
                ).value
                for r in (2, 5)
            ]
        assert torch.equal(*values) != round_in_heads


@pytest.mark.skipif(load_extension() is None, reason="the fused kernels did not build")
@pytest.mark.parametrize("is_verifier", [True, False])
@pytest.mark.parametrize("option", ["defaults", *REFERENCE, "all"])
def test_kernels_on_and_off_agree(small_pairs, monkeypatch, option, is_verifier):
    change = {
        "defaults": {},
        "all": REFERENCE,
    }.get(option, {option: REFERENCE.get(option)})
    td = _observation(small_pairs, build_protocol("pvg"), steps=3)
    agent = accelerate_agent(_agent(change, is_verifier))
    calls = {k: record_calls(monkeypatch, *where) for k, where in KERNELS.items()}
    fused, fused_grads = _outputs_and_gradients(agent, td)
    kept = set.intersection(set(KERNELS), *(KERNELS_KEPT[k] for k in change))
    assert {k for k, c in calls.items() if c} == kept
    fused_calls = sum(map(len, calls.values()))
    reference, grads = _outputs_and_gradients(plain_agent(agent), td)
    assert sum(map(len, calls.values())) == fused_calls  # the plain model calls none
    for got, want in zip(fused, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # Through the whole network float32 rounding (and ReLUs near 0) leave ~1e-4 of
    # the gradient's norm between kernels and PyTorch, with the defaults too; a
    # term computed wrongly or left out is of the gradient's own size.
    assert fused_grads.keys() == grads.keys()
    for name, grad in grads.items():
        difference = (fused_grads[name] - grad).norm()
        assert difference <= 1e-3 * grad.norm() + 1e-6, name
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "node_head" in n)


@pytest.mark.parametrize("is_verifier", [True, False])
def test_reference_agents_keep_the_invariances(small_pairs, monkeypatch, is_verifier):
    """Swapping the graphs and permuting nodes, as for the default agents."""
    monkeypatch.setattr(test_agents, "ARCH", replace(test_agents.ARCH, **REFERENCE))
    test_agents.test_graph_order_and_node_permutation_invariance(
        small_pairs, is_verifier
    )
