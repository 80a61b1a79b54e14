"""The agents' attention mask: who sees whom, in both of its forms."""

from __future__ import annotations

import pytest
import torch

from pvg_pipeline.pvg.scenarios.graph_isomorphism.attention_mask import (
    AttentionMask,
    _cpu_structure,
    _structure,
)


def _sees(query: int, key: int, nodes: int, real: list[bool]) -> bool:
    """Token by token: [2 pooled, nodes of A, nodes of B]."""
    if key >= 2 and not real[key - 2]:
        return False  # nobody sees a padding node
    if query < 2 or key < 2:
        return True  # pooled tokens see every real node and each other
    return (query - 2) // nodes != (key - 2) // nodes  # nodes: the other graph


@pytest.mark.parametrize("nodes", [1, 4, 11])
def test_allowed_is_the_documented_mask(nodes):
    generator = torch.Generator().manual_seed(nodes)
    node_mask = torch.rand(5, 2, nodes, generator=generator) > 0.4
    allowed = AttentionMask(node_mask).allowed()
    tokens = 2 + 2 * nodes
    assert allowed.shape == (5, 1, tokens, tokens)
    for row in range(5):
        real = node_mask[row].reshape(-1).tolist()
        expected = torch.tensor(
            [[_sees(i, j, nodes, real) for j in range(tokens)] for i in range(tokens)]
        )
        assert torch.equal(allowed[row, 0], expected)
    assert allowed[..., :2].all()  # every query sees at least the pooled tokens


@pytest.mark.parametrize("lanes", [1, 8, 16])
def test_bias_is_zero_where_allowed_and_minus_infinity_elsewhere(lanes):
    node_mask = torch.rand(7, 2, 11, generator=torch.Generator().manual_seed(1)) > 0.3
    mask = AttentionMask(node_mask)
    bias = mask.bias(lanes)
    tokens = mask.tokens
    assert bias.shape[:2] == (7, tokens) and bias.shape[2] % lanes == 0
    assert bias.shape[2] - tokens < lanes
    allowed = mask.allowed()[:, 0]
    assert torch.equal(bias[..., :tokens] == 0, allowed)
    assert torch.isneginf(bias[..., :tokens][~allowed]).all()
    assert torch.isneginf(bias[..., tokens:]).all()


def test_the_cached_cpu_structure_is_the_one_built_for_other_devices():
    for nodes in (1, 11, 15):
        tokens = 2 + 2 * nodes
        structure, _ = _cpu_structure(nodes, tokens)
        assert torch.equal(structure, _structure(nodes, torch.device("cpu")))
