"""The accelerator plugs into plain agents from outside: the same parameters and
results, a record of what it did, and the plain model when it is off."""

from __future__ import annotations

import logging

import pytest
import torch

from pvg_pipeline.accelerate import accelerate
from pvg_pipeline.accelerate.cpu import layers
from pvg_pipeline.accelerate.cpu.kernels import load_extension
from pvg_pipeline.accelerate.cpu.loss import eager_ppo_loss
from pvg_pipeline.pvg.protocols import build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import AgentArchitecture
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import AgentSpec, build_agents
from tests.pvg.scenarios.test_agents import _observation, _run

built = pytest.mark.skipif(load_extension() is None, reason="kernels did not build")


def _agents(prover: AgentSpec | None = None):
    torch.manual_seed(0)
    protocol = build_protocol("pvg", max_message_rounds=6)
    agents = build_agents(protocol, prover or AgentSpec(), AgentSpec(), 9)
    return protocol, {name: agent.eval() for name, agent in agents.items()}


def _fused_modules(agent: torch.nn.Module) -> set[str]:
    return {
        type(m).__name__
        for m in agent.modules()
        if type(m) in layers.FUSED_CLASSES.values()
    }


@built
def test_accelerated_agents_keep_parameters_and_results(small_pairs):
    protocol, agents = _agents()
    keys = {name: list(agent.state_dict()) for name, agent in agents.items()}
    td = _observation(small_pairs, protocol)
    plain = {name: _run(agent, td) for name, agent in agents.items()}
    acceleration = accelerate(agents, torch.device("cpu"))
    assert acceleration.record == {
        "cpu_kernels": "on",
        "switched_off": [],
        "not_covered": [],
    }
    assert acceleration.eager_loss is eager_ppo_loss
    for name, agent in agents.items():
        assert _fused_modules(agent) == {
            "FusedDenseGINLayer",
            "FusedCrossGraphAttentionLayer",
            "FusedAgentBody",
            "FusedGraphIsomorphismAgent",
        }
        assert list(agent.state_dict()) == keys[name]
        fused = _run(agent, td)
        torch.testing.assert_close(fused.value, plain[name].value, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            fused.node_logits, plain[name].node_logits, rtol=1e-5, atol=1e-5
        )
    # Back to the plain model: the same modules, the plain classes.
    layers.plain_agent(agents["verifier"])
    assert not _fused_modules(agents["verifier"])


def test_switched_off_or_another_device_leaves_the_plain_model(monkeypatch):
    _, agents = _agents()
    acceleration = accelerate(agents, torch.device("cuda"))
    assert acceleration.eager_loss is None
    assert acceleration.record == {
        "cpu_kernels": "off: the run is on cuda",
        "switched_off": [],
    }
    monkeypatch.setenv("PVG_FUSED_CPU_KERNELS", "0")
    monkeypatch.setenv("PVG_CUDA_STREAMS", "0")
    acceleration = accelerate(agents, torch.device("cpu"))
    assert acceleration.record == {
        "cpu_kernels": "off: PVG_FUSED_CPU_KERNELS=0",
        "switched_off": ["PVG_FUSED_CPU_KERNELS", "PVG_CUDA_STREAMS"],
    }
    assert not any(_fused_modules(agent) for agent in agents.values())


@built
def test_settings_a_kernel_does_not_cover_are_announced_and_recorded(
    monkeypatch, caplog
):
    tanh = AgentSpec(architecture=AgentArchitecture(activation="tanh"))
    _, agents = _agents(prover=tanh)
    monkeypatch.setenv("PVG_FUSED_CPU_HEADS", "0")
    with caplog.at_level(logging.WARNING, logger="pvg_pipeline.accelerate"):
        record = accelerate(agents, torch.device("cpu"), "smooth_l1").record
    assert record["switched_off"] == ["PVG_FUSED_CPU_HEADS"]
    assert record["not_covered"] == [
        "prover: activation tanh: the GIN, transformer and heads kernels cover relu "
        "only",
        "value_loss smooth_l1: the loss kernel covers the squared error only",
    ]
    assert len(caplog.records) == 1 and "prover: activation tanh" in caplog.text


@built
def test_a_random_prover_is_left_alone():
    _, agents = _agents(prover=AgentSpec(kind="random"))
    record = accelerate(agents, torch.device("cpu")).record
    assert record["not_covered"] == []
    assert not _fused_modules(agents["prover"])
    assert _fused_modules(agents["verifier"])


@built
def test_the_fused_heads_keep_the_answer_restriction(small_pairs):
    """``answer_in_other_graph`` narrows the nodes the heads may choose; the fused
    heads must block the same ones."""
    restricted = AgentSpec(architecture=AgentArchitecture(answer_in_other_graph=True))
    protocol, agents = _agents(prover=restricted)
    td = _observation(small_pairs, protocol, steps=1)
    plain = _run(agents["prover"], td).node_logits
    accelerate(agents, torch.device("cpu"))
    assert "FusedGraphIsomorphismAgent" in _fused_modules(agents["prover"])
    fused = _run(agents["prover"], td).node_logits
    assert torch.equal(torch.isinf(fused), torch.isinf(plain))
    assert torch.isinf(plain).any()
    finite = torch.isfinite(plain)
    torch.testing.assert_close(fused[finite], plain[finite], rtol=1e-5, atol=1e-5)
