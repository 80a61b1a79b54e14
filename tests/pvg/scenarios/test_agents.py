"""Agent networks: visibility, invariances, architecture parameters, acting."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pvg_pipeline.pvg.protocols import Rewards, build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import (
    AgentArchitecture,
    GameShape,
    GraphIsomorphismAgent,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import AgentSpec, build_agents
from pvg_pipeline.pvg.scenarios.graph_isomorphism.environment import (
    GraphIsomorphismEnv,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import MultiAgentPolicy

ARCH = AgentArchitecture(num_gnn_layers=3)


def _observation(small_pairs, protocol, batch=12, steps=3, seed=0):
    """Observations after a few random-agent rounds, so histories are non-empty."""
    torch.manual_seed(seed)
    env = GraphIsomorphismEnv(small_pairs, protocol, Rewards(), batch, seed=seed)
    random = AgentSpec(kind="random")
    policy = MultiAgentPolicy(build_agents(protocol, random, random, 9), protocol)
    td = env.reset()
    for _ in range(steps):
        td = env.step(policy(td))["next"]
    return td


def _run(agent, td, history=None):
    agent.eval()
    with torch.no_grad():
        return agent(
            td["adjacency"],
            td["node_mask"],
            td["message_history"] if history is None else history,
            td["round"],
        )


def test_channel_visibility(small_pairs):
    protocol = build_protocol("mnip", max_message_rounds=6, min_message_rounds=4)
    agents = build_agents(protocol, AgentSpec(), AgentSpec(), 9)
    td = _observation(small_pairs, protocol)
    noise = torch.rand_like(td["message_history"])
    for channel, changes in (
        (0, {"prover_0", "verifier"}),
        (1, {"prover_1", "verifier"}),
    ):
        perturbed = td["message_history"].clone()
        perturbed[:, :, channel] = noise[:, :, channel]
        for name, agent in agents.items():
            before, after = _run(agent, td), _run(agent, td, perturbed)
            same = torch.allclose(before.value, after.value) and torch.equal(
                before.node_logits, after.node_logits
            )
            assert same == (name not in changes), (channel, name)


@pytest.mark.parametrize("is_verifier", [True, False])
def test_graph_order_and_node_permutation_invariance(small_pairs, is_verifier):
    protocol = build_protocol("pvg")
    torch.manual_seed(1)
    agent = GraphIsomorphismAgent(ARCH, GameShape(9, 8, (0,)), is_verifier)
    td = _observation(small_pairs, protocol)
    base = _run(agent, td)
    # Swap the two graphs (and their messages).
    swapped = td.clone()
    for key, dim in (("adjacency", 1), ("node_mask", 1), ("message_history", 3)):
        swapped[key] = td[key].flip(dim)
    out = _run(agent, swapped)
    torch.testing.assert_close(out.value, base.value, atol=1e-5, rtol=1e-4)
    n = 9
    torch.testing.assert_close(
        out.node_logits,
        torch.cat([base.node_logits[:, n:], base.node_logits[:, :n]], 1),
        atol=1e-5,
        rtol=1e-4,
    )
    if is_verifier:
        torch.testing.assert_close(
            out.decision_logits, base.decision_logits, atol=1e-5, rtol=1e-4
        )
    # Permute the real nodes of graph A (padding stays in place).
    size = td["node_mask"][:, 0].sum(-1)
    perm = torch.stack(
        [torch.cat([torch.randperm(int(s)), torch.arange(int(s), n)]) for s in size]
    )
    rows = torch.arange(len(perm))[:, None]
    permuted = td.clone()
    permuted["adjacency"][:, 0] = td["adjacency"][:, 0][
        rows[..., None], perm[:, :, None], perm[:, None, :]
    ]
    permuted["message_history"][..., 0, :] = td["message_history"][..., 0, :].gather(
        -1, perm[:, None, None, :].expand_as(td["message_history"][..., 0, :])
    )
    out = _run(agent, permuted)
    torch.testing.assert_close(out.value, base.value, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        out.node_logits[:, :n],
        base.node_logits[:, :n].gather(1, perm),
        atol=1e-5,
        rtol=1e-4,
    )
    if is_verifier:
        torch.testing.assert_close(
            out.decision_logits, base.decision_logits, atol=1e-5, rtol=1e-4
        )


def _count(arch: AgentArchitecture) -> int:
    agent = GraphIsomorphismAgent(arch, GameShape(11, 8, (0,)), is_verifier=True)
    return sum(p.numel() for p in agent.parameters())


@pytest.mark.parametrize(
    "change",
    [
        {"num_gnn_layers": 5},
        {"d_gnn": 32},
        {"d_gin_mlp": 128},
        {"num_transformer_layers": 2},
        {"d_transformer": 32},
        {"d_transformer_mlp": 128},
        {"batch_norm": False},
    ],
)
def test_every_architecture_parameter_is_honoured(change):
    assert _count(replace(ARCH, **change)) != _count(ARCH)


def test_d_transformer_mlp_sets_the_feed_forward_width():
    agent = GraphIsomorphismAgent(
        replace(ARCH, d_transformer_mlp=64), GameShape(11, 8, (0,)), True
    )
    assert agent.body.transformer[0].mlp[0].out_features == 64


def test_padding_nodes_can_never_be_selected(small_pairs):
    protocol = build_protocol("pvg")
    td = _observation(small_pairs, protocol)
    agent = GraphIsomorphismAgent(ARCH, GameShape(9, 8, (0,)), True)
    probabilities = _run(agent, td).node_logits.softmax(-1)
    assert (probabilities[~td["node_mask"].flatten(1)] == 0).all()


def test_shared_body():
    protocol = build_protocol("debate")
    agents = build_agents(protocol, AgentSpec(), AgentSpec(), 9, shared_body=True)
    bodies = {id(agent.body) for agent in agents.values()}
    assert len(bodies) == 1
    separate = build_agents(protocol, AgentSpec(), AgentSpec(), 9)
    assert len({id(agent.body) for agent in separate.values()}) == 3


def test_only_active_agents_compute(small_pairs):
    protocol = build_protocol("pvg")
    agents = build_agents(
        protocol, AgentSpec(architecture=ARCH), AgentSpec(architecture=ARCH), 9
    )
    rows_seen = {name: [] for name in agents}
    for name, agent in agents.items():
        agent.eval()
        agent.register_forward_hook(
            lambda module, args, output, name=name: rows_seen[name].append(len(args[0]))
        )
    td = _observation(small_pairs, protocol, batch=10, steps=1)
    active = td["active"]
    torch.manual_seed(0)
    lazy = MultiAgentPolicy(agents, protocol, only_active=True)
    with torch.no_grad():
        lazy.deterministic = True
        out_lazy = lazy(td.clone())
    # An agent runs on exactly the rows where it acts, and not at all when it
    # acts nowhere (here: every game is at the prover's turn).
    counts = {"prover": int(active[:, 0].sum()), "verifier": int(active[:, 1].sum())}
    assert counts["verifier"] == 0 < counts["prover"]
    assert rows_seen == {name: [n] if n else [] for name, n in counts.items()}
    eager = MultiAgentPolicy(agents, protocol, only_active=False)
    eager.deterministic = True
    with torch.no_grad():
        out_eager = eager(td.clone())
    assert rows_seen["prover"][-1] == 10 and rows_seen["verifier"][-1] == 10
    for key in ("node", "decision", "log_prob", "value"):
        torch.testing.assert_close(out_lazy[key], out_eager[key])
    assert (out_lazy["log_prob"][~active] == 0).all()


def test_entropy_and_log_prob_have_finite_gradients_with_masked_actions():
    from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import (
        categorical_entropy,
        categorical_log_prob,
        restrict_decisions,
    )

    logits = torch.randn(4, 3, requires_grad=True)
    restricted = restrict_decisions(logits, torch.tensor([True, False, True, False]))
    loss = (
        categorical_entropy(restricted).sum()
        + categorical_log_prob(restricted, torch.tensor([0, 2, 1, 2])).sum()
    )
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert categorical_entropy(restricted)[1] == 0  # only "continue" possible


def test_input_projection_is_the_linear_layer_with_its_gradients():
    from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import _project

    torch.manual_seed(0)
    layer = torch.nn.Linear(9, 16)
    features = torch.randn(5, 2, 11, 9)
    upstream = torch.randn(5, 2, 11, 16)
    expected = layer(features)
    (expected * upstream).sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    projected = _project(features, layer)
    (projected * upstream).sum().backward()
    torch.testing.assert_close(projected, expected)
    for got, want in zip((p.grad for p in layer.parameters()), grads, strict=True):
        torch.testing.assert_close(got, want)


def _prover_logits(small_pairs, steps: int, answer_in_other_graph: bool):
    protocol = build_protocol("pvg", max_message_rounds=6)
    spec = AgentSpec(
        architecture=replace(ARCH, answer_in_other_graph=answer_in_other_graph)
    )
    torch.manual_seed(0)
    prover = build_agents(protocol, spec, AgentSpec(), 9)["prover"]
    td = _observation(small_pairs, protocol, steps=steps)
    logits = _run(prover, td).node_logits.view(-1, 2, 9)
    return td, logits


def test_answer_in_other_graph_blocks_the_graph_of_the_question(small_pairs):
    # After one step the verifier has asked (round 0) and the prover answers.
    td, logits = _prover_logits(small_pairs, steps=1, answer_in_other_graph=True)
    assert (td["round"] == 1).all()
    asked = td["message_history"][:, 0, 0].sum(-1) > 0  # (batch, graph)
    assert (asked.sum(-1) == 1).all()
    real = td["node_mask"]
    assert torch.isinf(logits[asked[:, :, None].expand_as(real)]).all()
    other = real & ~asked[:, :, None]
    assert torch.isfinite(logits[other]).all() and other.any(-1).any(-1).all()
    # Off (the default), the prover may point into either graph.
    _, free = _prover_logits(small_pairs, steps=1, answer_in_other_graph=False)
    assert torch.isfinite(free[real]).all()
    # Before any message nothing is blocked.
    td0, first = _prover_logits(small_pairs, steps=0, answer_in_other_graph=True)
    assert torch.isfinite(first[td0["node_mask"]]).all()
