"""The fused CPU attention kernel computes PyTorch's masked attention and its
gradients, and the agents use it on the CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pvg_pipeline.accelerate.cpu import attention as attention_module
from pvg_pipeline.accelerate.cpu.attention import (
    fusable,
    fused_attention,
)
from pvg_pipeline.accelerate.cpu.kernels import load_extension
from pvg_pipeline.accelerate.cpu.layers import FusedCrossGraphAttentionLayer
from pvg_pipeline.pvg.scenarios.graph_isomorphism.attention_mask import (
    AttentionMask,
)
from tests.pvg.scenarios.calls import record_calls

pytestmark = pytest.mark.skipif(
    load_extension() is None, reason="the fused CPU kernels could not build"
)


def _reference(qkv, mask, heads):
    batch, tokens, width = qkv.shape
    d_model = width // 3
    query, key, value = qkv.view(batch, tokens, 3, heads, d_model // heads).permute(
        2, 0, 3, 1, 4
    )
    out = nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask.allowed()
    )
    return out.transpose(1, 2).reshape(batch, tokens, d_model)


def _inputs(batch, nodes, heads, head_dim, seed=0):
    generator = torch.Generator().manual_seed(seed)
    node_mask = torch.rand(batch, 2, nodes, generator=generator) > 0.3
    tokens = 2 + 2 * nodes
    qkv = 2 * torch.randn(batch, tokens, 3 * heads * head_dim, generator=generator)
    return qkv, AttentionMask(node_mask)


# Token counts below, at and above a vector width; several head sizes.
@pytest.mark.parametrize(
    ("batch", "nodes", "heads", "head_dim"),
    [(5, 3, 4, 4), (17, 11, 4, 4), (3, 7, 2, 8), (9, 15, 1, 16), (1, 1, 3, 5)],
)
def test_forward_and_gradients_match_pytorch_attention(batch, nodes, heads, head_dim):
    qkv, mask = _inputs(batch, nodes, heads, head_dim)
    ours_input = qkv.clone().requires_grad_()
    reference_input = qkv.clone().requires_grad_()
    ours = fused_attention(ours_input, mask, heads)
    reference = _reference(reference_input, mask, heads)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(reference)
    ours.backward(upstream)
    reference.backward(upstream)
    torch.testing.assert_close(
        ours_input.grad, reference_input.grad, rtol=1e-4, atol=1e-4
    )


def test_masked_keys_get_no_weight_and_no_gradient():
    qkv, mask = _inputs(4, 5, 4, 4, seed=1)
    mask.real_nodes[:, 3] = False  # token 5 (node 3 of graph A) is padding
    changed = qkv.clone()
    changed[:, 5] += 100.0  # its query, key and value
    qkv.requires_grad_()
    out = fused_attention(qkv, mask, 4)
    others = [t for t in range(qkv.shape[1]) if t != 5]
    torch.testing.assert_close(
        out[:, others], fused_attention(changed, mask, 4)[:, others]
    )
    out[:, others].sum().backward()
    d_model = 16
    key_value_grad = qkv.grad[:, 5, d_model:]
    assert torch.equal(key_value_grad, torch.zeros_like(key_value_grad))


def test_inference_keeps_no_probabilities_and_matches_training_output():
    qkv, mask = _inputs(6, 11, 4, 4, seed=2)
    with torch.no_grad():
        inference = fused_attention(qkv, mask, 4)
    training = fused_attention(qkv.clone().requires_grad_(), mask, 4)
    assert torch.equal(inference, training.detach())


def test_the_layer_uses_the_kernel_on_cpu_and_pytorch_otherwise(monkeypatch):
    # The layer's own kernels (cpu_transformer) off: the attention kernel alone.
    monkeypatch.setenv("PVG_FUSED_CPU_TRANSFORMER", "0")
    torch.manual_seed(0)
    layer = FusedCrossGraphAttentionLayer(16, 4, 64, "relu")
    node_mask = torch.rand(8, 2, 11) > 0.2
    mask = AttentionMask(node_mask)
    tokens = torch.randn(8, 24, 16)
    calls = record_calls(monkeypatch, attention_module, "fused_attention")
    fused = layer(tokens, mask)
    assert calls, "the CPU layer did not use the fused kernel"
    monkeypatch.setattr(attention_module, "fusable", lambda qkv: False)
    torch.testing.assert_close(fused, layer(tokens, mask), rtol=1e-5, atol=1e-5)
    assert not fusable(tokens.double())


@pytest.mark.parametrize("switch", ["PVG_FUSED_CPU_ATTENTION", "PVG_FUSED_CPU_KERNELS"])
def test_switched_off_by_environment_variable(monkeypatch, switch):
    assert fusable(torch.zeros(2, 4, 48))
    monkeypatch.setenv(switch, "0")
    assert not fusable(torch.zeros(2, 4, 48))
