"""Evaluation metrics, breakdown and transcripts."""

from __future__ import annotations

import math

import pytest
import torch

from pvg_pipeline.pvg import evaluation
from pvg_pipeline.pvg.evaluation import TIMEOUT, Episodes
from pvg_pipeline.pvg.protocols import Decision, Rewards, build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import AgentSpec, build_agents
from pvg_pipeline.pvg.scenarios.graph_isomorphism.game import new_episodes, step

A, R = int(Decision.ACCEPT), int(Decision.REJECT)


def _episodes(decisions, labels, rounds=None, scores=None, sizes=None):
    count = len(decisions)
    return Episodes(
        decision=torch.tensor(decisions),
        label=torch.tensor(labels),
        rounds=torch.tensor(rounds or [1] * count),
        wl_score=torch.tensor(scores or [-1] * count),
        size=torch.tensor(sizes or [7] * count),
        messages=[[] for _ in range(count)],
    )


def test_metrics_of_an_all_accept_verifier():
    metrics = evaluation.summary_metrics(_episodes([A] * 4, [True, True, True, False]))
    assert metrics["accuracy"] == 0.75
    assert metrics["completeness"] == 1.0
    assert metrics["soundness"] == 0.0
    assert metrics["acceptance_rate"] == 1.0
    assert metrics["acceptance_rate_non_isomorphic"] == 1.0
    assert metrics["pairs"] == 4


def test_metrics_of_an_all_reject_verifier():
    metrics = evaluation.summary_metrics(
        _episodes([R] * 4, [True, False, False, False])
    )
    assert metrics["accuracy"] == 0.75
    assert metrics["completeness"] == 0.0
    assert metrics["soundness"] == 1.0
    assert metrics["acceptance_rate"] == 0.0


def test_mixed_outcomes_with_timeouts():
    episodes = _episodes(
        [A, R, TIMEOUT, A, R], [True, True, False, False, False], rounds=[2, 4, 8, 2, 4]
    )
    metrics = evaluation.summary_metrics(episodes)
    assert metrics["accuracy"] == pytest.approx(2 / 5)
    assert metrics["completeness"] == pytest.approx(1 / 2)
    assert metrics["soundness"] == pytest.approx(1 / 3)
    assert metrics["timeout_rate"] == pytest.approx(1 / 5)
    assert metrics["mean_rounds"] == pytest.approx(4.0)
    assert math.isnan(
        evaluation.summary_metrics(_episodes([A], [False]))["completeness"]
    )


def test_breakdown_by_wl_score_and_size():
    episodes = _episodes(
        [A, R, A, R],
        [True, False, False, True],
        scores=[-1, 1, 1, -1],
        sizes=[7, 7, 8, 8],
    )
    table = evaluation.breakdown(episodes)
    by_score = table[table["grouping"] == "wl_score"].set_index("group")
    assert by_score.loc[-1, "accuracy"] == 0.5 and by_score.loc[-1, "pairs"] == 2
    assert (
        by_score.loc[1, "accuracy"] == 0.5 and by_score.loc[1, "acceptance_rate"] == 0.5
    )
    by_size = table[table["grouping"] == "graph_size"].set_index("group")
    assert by_size.loc[7, "accuracy"] == 1.0 and by_size.loc[8, "accuracy"] == 0.0


@pytest.mark.parametrize("name", ["pvg", "debate", "merlin_arthur"])
def test_transcripts_describe_the_episode_that_was_played(small_pairs, name):
    protocol = (
        build_protocol(name, max_message_rounds=6)
        if name != "merlin_arthur"
        else build_protocol(name)
    )
    random = AgentSpec(kind="random")
    agents = build_agents(protocol, random, random, 9)
    episodes = evaluation.play_episodes(
        agents, protocol, small_pairs, deterministic=False, batch_size=16, seed=3
    )
    assert len(episodes.decision) == len(small_pairs["sizes"])
    table = evaluation.transcripts(episodes, count=10, seed=0)
    assert len(table) == 10
    tables = protocol.tensors("cpu")
    n = small_pairs["adjacency"].shape[-1]
    for row in table.to_dict("records"):
        index = row["pair_index"]
        assert row["is_isomorphic"] == bool(small_pairs["is_isomorphic"][index])
        # Replay the recorded messages; the decision comes at the recorded round.
        choice = {"prover_0": 0, "prover_1": 1}.get(
            next((m["agent"] for m in row["messages"] if m["agent"] != "verifier"), ""),
            0,
        )
        state = new_episodes(
            small_pairs["adjacency"][index : index + 1],
            small_pairs["sizes"][index : index + 1],
            small_pairs["is_isomorphic"][index : index + 1],
            torch.tensor([index]),
            torch.tensor([choice]),
            protocol,
            tables,
        )
        final = {"accept": A, "reject": R, "timeout": int(Decision.CONTINUE)}[
            row["decision"]
        ]
        for round_number in range(row["rounds"]):
            nodes = torch.zeros(1, len(protocol.agents), dtype=torch.int64)
            for message in row["messages"]:
                if message["round"] == round_number:
                    agent = protocol.agents.index(message["agent"])
                    assert bool(state["active"][0, agent])
                    nodes[0, agent] = message["node"] + n * "ab".index(message["graph"])
            last = round_number == row["rounds"] - 1
            decision = torch.tensor([final if last else int(Decision.CONTINUE)])
            state, _, done = step(state, nodes, decision, protocol, tables, Rewards())
            assert bool(done[0]) == last
        assert int(state["message_history"].sum()) == sum(
            len(m["channels"]) for m in row["messages"]
        )
        expected = {"accept": A, "reject": R, "timeout": -1}[row["decision"]]
        assert int(state["decision"][0]) == expected
