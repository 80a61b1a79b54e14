"""The solo trainer's history carries the verifier's test-split learning metrics."""

from __future__ import annotations

import math

import torch

from pvg_pipeline.pvg import evaluation
from pvg_pipeline.pvg.protocols import build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import AgentArchitecture
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import AgentSpec, build_agents
from pvg_pipeline.pvg.trainers.solo_agent import (
    SoloAgentConfig,
    accuracy,
    train_solo_agents,
)

TINY = AgentSpec(
    architecture=AgentArchitecture(
        num_gnn_layers=1, d_gnn=8, d_gin_mlp=16, d_transformer=8, d_transformer_mlp=16
    )
)


def test_history_rows_hold_the_test_learning_metrics(small_pairs):
    train = {key: value[:40] for key, value in small_pairs.items()}
    test = {key: value[40:] for key, value in small_pairs.items()}
    protocol = build_protocol("pvg")
    torch.manual_seed(0)
    agents = build_agents(protocol, TINY, TINY, 9, classifiers=True)
    config = SoloAgentConfig(epochs=2, batch_size=16, learning_rate=3e-3)
    history = train_solo_agents(
        agents, train, test, config, 0, torch.device("cpu"), progress=False
    )
    assert len(history) == 2
    expected = {f"test_{key}" for key in evaluation.LEARNING_METRICS}
    for row in history:
        assert expected <= set(row), expected - set(row)
        assert row["test_accuracy"] == row["test_accuracy_verifier"]
    last = history[-1]
    # Computed on the test split with the final weights.
    verifier = agents["verifier"]
    assert last["test_accuracy"] == accuracy(verifier, test, 16)
    direct = evaluation.learning_metrics(evaluation.classify_pairs(verifier, test))
    for key, value in direct.items():
        recorded = last[f"test_{key}"]
        assert recorded == value or (math.isnan(recorded) and math.isnan(value)), key
    assert last["test_mean_rounds"] == 0.0 and last["test_timeout_rate"] == 0.0
    assert "test_accuracy_prover" in last and "train_loss_prover" in last
