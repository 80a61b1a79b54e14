"""The fused CPU GIN layer computes PyTorch's layer and its gradients, and the
agents use it on the CPU."""

from __future__ import annotations

import pytest
import torch

from pvg_pipeline.accelerate.cpu import gin as cpu_gin
from pvg_pipeline.accelerate.cpu.kernels import load_extension
from pvg_pipeline.accelerate.cpu.layers import FusedDenseGINLayer, accelerate_agent
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import (
    AgentArchitecture,
    GameShape,
    GraphIsomorphismAgent,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.layers import DenseGINLayer
from tests.pvg.scenarios.calls import record_calls
from tests.pvg.scenarios.threads import assert_same_on_one_and_two_threads

pytestmark = pytest.mark.skipif(
    load_extension() is None, reason="the fused CPU kernels could not build"
)


def _inputs(batch, nodes, d_in, seed=0, prefix=True):
    generator = torch.Generator().manual_seed(seed)
    if prefix:  # real nodes first, as the environment makes them
        sizes = torch.randint(0, nodes + 1, (batch, 2), generator=generator)
        node_mask = torch.arange(nodes) < sizes[..., None]
    else:
        node_mask = torch.rand(batch, 2, nodes, generator=generator) > 0.3
    edges = torch.rand(batch, 2, nodes, nodes, generator=generator) < 0.4
    edges = (edges | edges.transpose(-1, -2)) & node_mask[..., None]
    adjacency = (edges & node_mask[..., None, :]).float()
    features = torch.randn(batch, 2, nodes, d_in, generator=generator)
    return features * node_mask[..., None], adjacency, node_mask


def _layer(d_in, d_hidden, d_out, seed=0):
    torch.manual_seed(seed)
    layer = FusedDenseGINLayer(d_in, d_hidden, d_out, "relu")
    with torch.no_grad():
        layer.eps.fill_(0.25)  # a non-zero eps, so its gradient path counts
        layer.mlp[0].bias.normal_()  # some hidden units off, some on
    return layer


def _forward_and_gradients(layer, features, adjacency, node_mask, upstream):
    features = features.clone().requires_grad_()
    out = layer(features, adjacency, node_mask)
    grads = torch.autograd.grad(out, [features, *layer.parameters()], upstream)
    return out, grads


# Graph sizes 0..N, real nodes first or scattered, several widths.
@pytest.mark.parametrize(
    ("batch", "nodes", "d_in", "d_hidden", "d_out", "prefix"),
    [
        (37, 11, 16, 64, 16, True),
        (5, 3, 8, 16, 8, True),
        (9, 15, 16, 32, 24, False),
        (1, 1, 8, 8, 8, True),
    ],
)
def test_forward_and_gradients_match_pytorch(
    monkeypatch, batch, nodes, d_in, d_hidden, d_out, prefix
):
    layer = _layer(d_in, d_hidden, d_out)
    features, adjacency, node_mask = _inputs(batch, nodes, d_in, prefix=prefix)
    assert cpu_gin.fusable(features, adjacency, layer.mlp, "relu")
    upstream = torch.randn(batch, 2, nodes, d_out)
    calls = record_calls(monkeypatch, cpu_gin, "fused_gin")
    ours, our_grads = _forward_and_gradients(
        layer, features, adjacency, node_mask, upstream
    )
    assert calls, "the CPU layer did not use the fused kernel"
    monkeypatch.setenv(cpu_gin.SWITCH, "0")
    reference, reference_grads = _forward_and_gradients(
        layer, features, adjacency, node_mask, upstream
    )
    assert len(calls) == 1, "switched off, the layer still used the kernel"
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    for ours_grad, reference_grad in zip(our_grads, reference_grads, strict=True):
        torch.testing.assert_close(ours_grad, reference_grad, rtol=1e-4, atol=1e-4)


def test_padding_nodes_are_zero_and_do_not_change_real_ones():
    layer = _layer(16, 64, 16)
    features, adjacency, node_mask = _inputs(8, 11, 16, seed=3)
    with torch.no_grad():
        out = layer(features, adjacency, node_mask)
        assert torch.equal(out[~node_mask], torch.zeros_like(out[~node_mask]))
        # Padding nodes have no edges, so their features never reach real nodes.
        noisy = features + 50.0 * (~node_mask[..., None])
        torch.testing.assert_close(layer(noisy, adjacency, node_mask), out)


def test_weight_gradients_do_not_depend_on_the_thread_count():
    layer = _layer(16, 64, 16)
    features, adjacency, node_mask = _inputs(200, 11, 16, seed=4)
    upstream = torch.randn(200, 2, 11, 16)
    assert_same_on_one_and_two_threads(
        lambda: _forward_and_gradients(layer, features, adjacency, node_mask, upstream)
    )


def test_not_used_where_it_does_not_apply():
    layer = _layer(16, 64, 16)
    features, adjacency, _ = _inputs(2, 5, 16)
    assert not cpu_gin.fusable(features.double(), adjacency, layer.mlp, "relu")
    assert not cpu_gin.fusable(features, adjacency, layer.mlp, "tanh")
    assert not cpu_gin.fusable(features, adjacency.requires_grad_(), layer.mlp, "relu")
    odd = DenseGINLayer(16, 60, 16, "relu")  # hidden width not a vector multiple
    assert not cpu_gin.fusable(features, adjacency.detach(), odd.mlp, "relu")


def test_whole_agent_with_the_kernels_matches_plain_pytorch(monkeypatch):
    """The agent as the trainer runs it: every fused CPU kernel on vs all off."""
    torch.manual_seed(0)
    shape = GameShape(max_nodes=11, max_rounds=8, visible_channels=(0, 1))
    agent = accelerate_agent(
        GraphIsomorphismAgent(
            AgentArchitecture(num_gnn_layers=5), shape, is_verifier=True
        )
    )
    _, adjacency, node_mask = _inputs(32, 11, 16, seed=5)
    history = (torch.rand(32, 8, 2, 2, 11) < 0.1).float()
    round_number = torch.randint(0, 8, (32,))
    inputs = (adjacency.bool(), node_mask, history, round_number)

    def run():
        agent.zero_grad()
        output = agent(*inputs)
        finite = output.node_logits.masked_fill(~node_mask.reshape(32, -1), 0.0)
        (
            finite.sum() + output.decision_logits.pow(2).sum() + output.value.sum()
        ).backward()
        grads = [p.grad.clone() for p in agent.parameters()]
        return [output.node_logits, output.decision_logits, output.value], grads

    fused_outputs, fused_grads = run()
    monkeypatch.setenv("PVG_FUSED_CPU_KERNELS", "0")
    plain_outputs, plain_grads = run()
    for ours, reference in zip(fused_outputs, plain_outputs, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
    for ours, reference in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-3, atol=1e-4)
