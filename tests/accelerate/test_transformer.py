"""The fused CPU transformer layer computes the PyTorch layer, and the agents use it
exactly when no gradient is wanted."""

from __future__ import annotations

import pytest
import torch

from pvg_pipeline.accelerate.cpu import transformer as cpu_transformer
from pvg_pipeline.accelerate.cpu.kernels import load_extension
from pvg_pipeline.accelerate.cpu.layers import (
    FusedCrossGraphAttentionLayer,
    accelerate_agent,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import (
    AgentArchitecture,
    GameShape,
    GraphIsomorphismAgent,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.attention_mask import (
    AttentionMask,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.layers import CrossGraphAttentionLayer
from tests.pvg.scenarios.calls import record_calls
from tests.pvg.scenarios.threads import assert_same_on_one_and_two_threads

pytestmark = pytest.mark.skipif(
    load_extension() is None, reason="the fused CPU kernels could not build"
)


def _layer(d_model, heads, d_mlp, seed=0):
    torch.manual_seed(seed)
    layer = FusedCrossGraphAttentionLayer(d_model, heads, d_mlp, "relu")
    with torch.no_grad():
        for parameter in layer.parameters():  # not LayerNorm's identity start
            parameter.normal_(0.0, 0.5)
    return layer


def _inputs(batch, nodes, d_model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    node_mask = torch.rand(batch, 2, nodes, generator=generator) > 0.3
    tokens = 2 * torch.randn(batch, 2 + 2 * nodes, d_model, generator=generator)
    return tokens, AttentionMask(node_mask)


# Token counts below, at and above a vector width; other widths and head counts.
@pytest.mark.parametrize(
    ("batch", "nodes", "d_model", "heads", "d_mlp"),
    [(5, 3, 16, 4, 64), (37, 11, 16, 4, 64), (3, 7, 16, 2, 32), (2, 1, 8, 1, 8)],
)
def test_matches_the_pytorch_layer(monkeypatch, batch, nodes, d_model, heads, d_mlp):
    layer = _layer(d_model, heads, d_mlp)
    tokens, mask = _inputs(batch, nodes, d_model)
    calls = record_calls(monkeypatch, cpu_transformer, "fused_layer")
    with torch.no_grad():
        fused = layer(tokens, mask)
        assert calls, "the layer did not use the fused kernel"
        monkeypatch.setenv("PVG_FUSED_CPU_KERNELS", "0")
        reference = layer(tokens, mask)
    assert len(calls) == 1
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)


def test_an_empty_batch():
    layer = _layer(16, 4, 64)
    tokens, mask = _inputs(0, 11, 16)
    with torch.no_grad():
        assert layer(tokens, mask).shape == (0, 24, 16)


def test_used_only_when_no_gradient_is_wanted(monkeypatch):
    layer = _layer(16, 4, 64)
    tokens, mask = _inputs(4, 11, 16)
    calls = record_calls(monkeypatch, cpu_transformer, "fused_layer")
    training = layer(tokens, mask)
    assert not calls and training.requires_grad  # training: autograd needs the ops
    with torch.no_grad():
        acting = layer(tokens, mask)
    assert calls == [1]
    layer.requires_grad_(False)  # frozen, grad mode on: nothing to differentiate
    layer(tokens, mask)
    assert calls == [1, 1]
    assert not cpu_transformer.fusable(layer, tokens.requires_grad_())
    torch.testing.assert_close(acting, training.detach(), rtol=1e-5, atol=1e-5)


def test_not_used_where_it_does_not_apply(monkeypatch):
    tokens, _ = _inputs(2, 5, 16)
    with torch.no_grad():
        assert cpu_transformer.fusable(_layer(16, 4, 64), tokens)
        assert not cpu_transformer.fusable(_layer(16, 4, 64), tokens.double())
        tanh = CrossGraphAttentionLayer(16, 4, 64, "tanh")
        assert not cpu_transformer.fusable(tanh, tokens)
        odd = CrossGraphAttentionLayer(16, 4, 60, "relu")  # not a vector multiple
        assert not cpu_transformer.fusable(odd, tokens)
        monkeypatch.setenv("PVG_FUSED_CPU_TRANSFORMER", "0")
        assert not cpu_transformer.fusable(_layer(16, 4, 64), tokens)


def test_does_not_depend_on_the_thread_count():
    layer = _layer(16, 4, 64)
    tokens, mask = _inputs(200, 11, 16, seed=3)

    def acting():
        with torch.no_grad():
            return layer(tokens, mask)

    assert_same_on_one_and_two_threads(acting)


def test_whole_agent_acting_matches_plain_pytorch(monkeypatch):
    """The agent as the collector runs it (no gradients): kernels on vs all off."""
    torch.manual_seed(0)
    shape = GameShape(max_nodes=11, max_rounds=8, visible_channels=(0, 1))
    agent = accelerate_agent(
        GraphIsomorphismAgent(
            AgentArchitecture(num_gnn_layers=5), shape, is_verifier=True
        )
    )
    generator = torch.Generator().manual_seed(5)
    node_mask = torch.rand(32, 2, 11, generator=generator) > 0.2
    adjacency = torch.rand(32, 2, 11, 11, generator=generator) < 0.3
    adjacency &= node_mask[:, :, :, None] & node_mask[:, :, None, :]
    history = (torch.rand(32, 8, 2, 2, 11, generator=generator) < 0.1).float()
    round_number = torch.randint(0, 8, (32,), generator=generator)
    calls = record_calls(monkeypatch, cpu_transformer, "fused_layer")
    with torch.no_grad():
        fused = agent(adjacency, node_mask, history, round_number)
        assert calls, "acting did not use the fused transformer layer"
        monkeypatch.setenv("PVG_FUSED_CPU_KERNELS", "0")
        plain = agent(adjacency, node_mask, history, round_number)
    for name in ("node_logits", "decision_logits", "value"):
        torch.testing.assert_close(
            getattr(fused, name), getattr(plain, name), rtol=1e-5, atol=1e-5
        )


def _output_and_gradients(half, tokens, upstream, modules):
    """One half of the layer (``half(tokens)``) forward and backward: its output,
    and the gradients of the tokens and of ``modules``' parameters."""
    for module in modules:
        module.zero_grad()
    tokens = tokens.clone().requires_grad_()
    out = half(tokens)
    out.backward(upstream)
    parameters = [p for module in modules for p in module.parameters()]
    return out.detach(), [tokens.grad, *(p.grad.clone() for p in parameters)]


def _assert_matches(fused, fused_grads, reference, grads):
    """Outputs to 1e-5 and the 7 gradients (tokens, 2 weights, 2 biases, the norm's
    weight and bias) to 1e-4."""
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)
    assert len(fused_grads) == len(grads) == 7
    for ours, theirs in zip(fused_grads, grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def _feed_forward_and_gradients(layer, tokens, upstream, fused):
    def half(tokens):
        if fused:
            return cpu_transformer.fused_feed_forward(layer, tokens)
        return layer.norm_mlp(tokens + layer.mlp(tokens))

    return _output_and_gradients(half, tokens, upstream, (layer.mlp, layer.norm_mlp))


# One chunk of rows, several with a partial last one, other widths.
@pytest.mark.parametrize(
    ("batch", "tokens", "d_model", "d_mlp"),
    [(5, 8, 16, 64), (37, 24, 16, 64), (3, 7, 8, 8)],
)
def test_feed_forward_and_its_gradients_match_pytorch(batch, tokens, d_model, d_mlp):
    layer = _layer(d_model, 1, d_mlp)
    inputs = 2 * torch.randn(batch, tokens, d_model)
    upstream = torch.randn(batch, tokens, d_model)
    fused, fused_grads = _feed_forward_and_gradients(layer, inputs, upstream, True)
    reference, grads = _feed_forward_and_gradients(layer, inputs, upstream, False)
    # tokens, W1, b1, W2, b2, LayerNorm weight and bias
    _assert_matches(fused, fused_grads, reference, grads)


def test_feed_forward_gradients_do_not_depend_on_the_thread_count():
    layer = _layer(16, 4, 64)
    inputs, upstream = torch.randn(200, 24, 16), torch.randn(200, 24, 16)
    assert_same_on_one_and_two_threads(
        lambda: _feed_forward_and_gradients(layer, inputs, upstream, True)
    )


def test_training_uses_both_block_kernels(monkeypatch):
    layer = _layer(16, 4, 64)
    tokens, mask = _inputs(4, 11, 16)
    calls = []
    for name in ("fused_attention_block", "fused_feed_forward"):
        original = getattr(cpu_transformer, name)
        monkeypatch.setattr(
            cpu_transformer,
            name,
            lambda *args, name=name, original=original: calls.append(name)
            or original(*args),
        )
    fused = layer(tokens, mask)
    assert calls == ["fused_attention_block", "fused_feed_forward"]
    assert fused.requires_grad
    monkeypatch.setenv("PVG_FUSED_CPU_TRANSFORMER", "0")
    torch.testing.assert_close(fused, layer(tokens, mask), rtol=1e-5, atol=1e-5)
    assert len(calls) == 2


def _attention_block_and_gradients(layer, tokens, mask, upstream, fused):
    def half(tokens):
        if fused:
            return cpu_transformer.fused_attention_block(layer, tokens, mask)
        batch, length, d_model = tokens.shape
        heads = layer.num_heads
        query, key, value = (
            layer.qkv(tokens)
            .view(batch, length, 3, heads, d_model // heads)
            .permute(2, 0, 3, 1, 4)
        )
        attended = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=mask.allowed()
        )
        attended = attended.transpose(1, 2).reshape(batch, length, d_model)
        return layer.norm_attention(tokens + layer.out(attended))

    modules = (layer.qkv, layer.out, layer.norm_attention)
    return _output_and_gradients(half, tokens, upstream, modules)


# One chunk of batch rows, several with a partial last one, token counts below and
# above a vector width, other head counts and widths.
@pytest.mark.parametrize(
    ("batch", "nodes", "d_model", "heads"),
    [(5, 3, 16, 4), (37, 11, 16, 4), (3, 7, 16, 2), (2, 1, 8, 1)],
)
def test_attention_block_and_its_gradients_match_pytorch(batch, nodes, d_model, heads):
    layer = _layer(d_model, heads, 64)
    tokens, mask = _inputs(batch, nodes, d_model, seed=6)
    upstream = torch.randn_like(tokens)
    fused, fused_grads = _attention_block_and_gradients(
        layer, tokens, mask, upstream, True
    )
    reference, grads = _attention_block_and_gradients(
        layer, tokens, mask, upstream, False
    )
    # tokens, Wqkv, bqkv, Wo, bo, LayerNorm weight and bias
    _assert_matches(fused, fused_grads, reference, grads)


def test_attention_block_gradients_do_not_depend_on_the_thread_count():
    layer = _layer(16, 4, 64)
    tokens, mask = _inputs(100, 11, 16, seed=7)
    upstream = torch.randn_like(tokens)
    assert_same_on_one_and_two_threads(
        lambda: _attention_block_and_gradients(layer, tokens, mask, upstream, True)
    )
