"""The verifier against uniformly random provers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pvg_pipeline.pvg import evaluation, prover_ablation
from pvg_pipeline.pvg.protocols import Decision, build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import AgentOutput
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import RandomAgent


def _legal(node_mask: torch.Tensor) -> torch.Tensor:
    logits = torch.zeros(node_mask.flatten(1).shape)
    return logits.masked_fill(~node_mask.flatten(1), float("-inf"))


class _GraphBProver(nn.Module):
    """Always names the first node of graph ``b``."""

    def forward(self, adjacency, node_mask, message_history, round_number):
        logits = _legal(node_mask)
        logits[:, node_mask.shape[-1]] = 1.0
        return AgentOutput(logits, None, torch.zeros(len(node_mask)))


class _TrustingVerifier(nn.Module):
    """Asks about graph ``a``; accepts iff some message named a node of graph ``b``."""

    def forward(self, adjacency, node_mask, message_history, round_number):
        saw_b = message_history[:, :, :, 1].flatten(1).sum(-1) > 0
        decision = torch.zeros(len(node_mask), len(Decision))
        decision[:, int(Decision.ACCEPT)] = saw_b.float()
        decision[:, int(Decision.REJECT)] = (~saw_b).float()
        return AgentOutput(_legal(node_mask), decision, torch.zeros(len(node_mask)))


def test_provers_are_replaced_by_uniformly_random_ones(small_pairs):
    # Decisions count from round 2, the verifier's turn after the prover's answer.
    protocol = build_protocol("pvg", max_message_rounds=4, min_message_rounds=2)
    agents = {"prover": _GraphBProver(), "verifier": _TrustingVerifier()}
    trained = evaluation.learning_metrics(
        evaluation.play_episodes(agents, protocol, small_pairs)
    )
    assert trained["completeness"] == 1.0 and trained["soundness"] == 0.0
    ablated = prover_ablation.random_prover_metrics(agents, protocol, small_pairs)
    assert set(ablated) == {f"random_prover_{k}" for k in evaluation.LEARNING_METRICS}
    # Under greedy play a random prover still names graph b about half the time
    # (a constant first-node prover would never: completeness 0).
    assert 0.2 < ablated["random_prover_completeness"] < 0.8
    assert 0.2 < ablated["random_prover_soundness"] < 0.8
    # The same seed replays the same random provers.
    again = prover_ablation.random_prover_metrics(agents, protocol, small_pairs)
    assert again == pytest.approx(ablated, rel=0, abs=0, nan_ok=True)


def test_a_random_prover_names_real_nodes_uniformly_even_greedily():
    torch.manual_seed(0)
    node_mask = torch.zeros(4000, 2, 5, dtype=torch.bool)
    node_mask[:, :, :3] = True
    output = RandomAgent(is_verifier=False)(None, node_mask, None, None)
    assert output.decision_logits is None
    chosen = output.node_logits.argmax(-1)
    counts = torch.bincount(chosen, minlength=10)
    assert counts[[3, 4, 8, 9]].sum() == 0  # never a padding node
    assert ((counts[[0, 1, 2, 5, 6, 7]] - 4000 / 6).abs() < 150).all()


def test_no_prover_means_nothing_to_ablate():
    protocol = build_protocol("solo_verifier")
    metrics = prover_ablation.random_prover_metrics(
        {"verifier": _TrustingVerifier()}, protocol, {}
    )
    assert len(metrics) == len(evaluation.LEARNING_METRICS)
    assert all(math.isnan(value) for value in metrics.values())
