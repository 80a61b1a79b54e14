"""The fused CPU kernel for the transformer's tokens computes what the PyTorch body
computes, with the same gradients, and is used only where it applies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pvg_pipeline.accelerate.cpu import tokens as cpu_tokens
from pvg_pipeline.accelerate.cpu.kernels import load_extension
from pvg_pipeline.accelerate.cpu.layers import FusedAgentBody
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import AgentArchitecture
from tests.pvg.scenarios.calls import record_calls
from tests.pvg.scenarios.gradients import assert_same_gradients
from tests.pvg.scenarios.threads import assert_same_on_one_and_two_threads

pytestmark = pytest.mark.skipif(
    load_extension() is None, reason="the fused CPU kernels could not build"
)

ROUNDS = 8


def _body(batch_norm=True, d_gnn=16, d_transformer=16, seed=0):
    torch.manual_seed(seed)
    arch = AgentArchitecture(
        d_gnn=d_gnn, d_transformer=d_transformer, batch_norm=batch_norm
    )
    body = FusedAgentBody(arch, d_gnn, ROUNDS).eval()
    with torch.no_grad():
        for parameter in body.parameters():
            parameter.normal_(0.0, 0.5)
        if batch_norm:  # running statistics away from (0, 1)
            body.pool_norm.running_mean.normal_(0.0, 2.0)
            body.pool_norm.running_var.uniform_(0.5, 3.0)
    return body


def _inputs(batch, nodes, d_gnn=16, seed=0):
    """A GIN output (zero on padding nodes) and rounds; the two graphs of a few rows
    pool to the same values (|difference| at its kink)."""
    generator = torch.Generator().manual_seed(seed)
    node_mask = torch.rand(batch, 2, nodes, generator=generator) > 0.3
    h = torch.randn(batch, 2, nodes, d_gnn, generator=generator) * node_mask[..., None]
    h[::5, 1] = h[::5, 0]
    rounds = torch.randint(0, ROUNDS + 1, (batch,), generator=generator)
    return h, rounds


def _tokens_and_gradients(body, h, rounds, upstream):
    body.zero_grad()
    h = h.clone().requires_grad_(True)
    tokens = body.tokens(h, rounds)
    (tokens * upstream).sum().backward()
    grads = {"h": h.grad}
    grads |= {name: p.grad for name, p in body.named_parameters() if p.grad is not None}
    return tokens.detach(), grads


# One chunk of the backward pass and several with a partial last one; graphs of
# one node; without a batch norm; other widths; an empty batch.
@pytest.mark.parametrize(
    ("batch", "nodes", "batch_norm", "d_gnn", "d_transformer"),
    [
        (5, 11, True, 16, 16),
        (0, 11, True, 16, 16),
        (70, 11, True, 16, 16),
        (9, 1, True, 16, 16),
        (33, 7, False, 16, 16),
        (6, 4, True, 8, 24),
    ],
)
def test_matches_the_pytorch_body_with_gradients(
    monkeypatch, batch, nodes, batch_norm, d_gnn, d_transformer
):
    body = _body(batch_norm, d_gnn, d_transformer)
    h, rounds = _inputs(batch, nodes, d_gnn)
    upstream = torch.randn(batch, 2 + 2 * nodes, d_transformer)
    calls = record_calls(monkeypatch, cpu_tokens, "fused_tokens")
    fused, fused_grads = _tokens_and_gradients(body, h, rounds, upstream)
    assert calls == [1], "the body did not use the fused kernel"
    monkeypatch.setenv(cpu_tokens.SWITCH, "0")
    reference, grads = _tokens_and_gradients(body, h, rounds, upstream)
    assert calls == [1]
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)
    # Every gradient: h, pool_in, node_in, the round embedding, the batch norm's.
    assert_same_gradients(fused_grads, grads)
    assert {"h", "round_embedding.weight", "pool_in.weight", "node_in.bias"} <= set(
        grads
    )
    assert ("pool_norm.weight" in grads) == batch_norm


def test_without_gradients_equals_the_pytorch_body(monkeypatch):
    body = _body()
    h, rounds = _inputs(40, 11)
    calls = record_calls(monkeypatch, cpu_tokens, "fused_tokens")
    with torch.no_grad():
        fused = body.tokens(h, rounds)
        monkeypatch.setenv("PVG_FUSED_CPU_KERNELS", "0")
        reference = body.tokens(h, rounds)
    assert calls == [1]
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)


def test_not_used_where_it_does_not_apply(monkeypatch):
    calls = record_calls(monkeypatch, cpu_tokens, "fused_tokens")
    h, rounds = _inputs(4, 5)
    training = _body().train()  # batch statistics: not the kernel's affine norm
    training.tokens(h, rounds)
    _body().double().tokens(h.double(), rounds)
    _body(d_gnn=12).tokens(_inputs(4, 5, d_gnn=12)[0], rounds)
    monkeypatch.setenv(cpu_tokens.SWITCH, "0")
    _body().tokens(h, rounds)
    assert calls == []
    assert isinstance(training.pool_norm, nn.BatchNorm1d)


def test_a_round_outside_the_embedding_is_an_error():
    body = _body()
    h, rounds = _inputs(3, 5)
    rounds[1] = ROUNDS + 1
    with torch.no_grad(), pytest.raises(RuntimeError, match="outside the round"):
        body.tokens(h, rounds)


def test_same_on_one_and_two_threads():
    body = _body()
    h, rounds = _inputs(100, 11)
    upstream = torch.randn(100, 24, 16)

    def compute():
        tokens, grads = _tokens_and_gradients(body, h, rounds, upstream)
        return [tokens, *grads.values()]

    assert_same_on_one_and_two_threads(compute)
