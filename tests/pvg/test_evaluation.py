"""Evaluation metrics, breakdown and transcripts."""

from __future__ import annotations

import math

import pytest
import torch

from pvg_pipeline.pvg import evaluation
from pvg_pipeline.pvg.evaluation import TIMEOUT, Episodes
from pvg_pipeline.pvg.protocols import Decision, Rewards, build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import AgentArchitecture
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import AgentSpec, build_agents
from pvg_pipeline.pvg.scenarios.graph_isomorphism.game import new_episodes, step
from pvg_pipeline.pvg.trainers.solo_agent import accuracy

A, R = int(Decision.ACCEPT), int(Decision.REJECT)
TINY = AgentSpec(
    architecture=AgentArchitecture(
        num_gnn_layers=1, d_gnn=8, d_gin_mlp=16, d_transformer=8, d_transformer_mlp=16
    )
)


def _episodes(decisions, labels, rounds=None, scores=None, sizes=None):
    count = len(decisions)
    return Episodes(
        decision=torch.tensor(decisions, dtype=torch.int64),
        label=torch.tensor(labels, dtype=torch.bool),
        rounds=torch.tensor(rounds or [1] * count, dtype=torch.int64),
        wl_score=torch.tensor(scores or [-1] * count, dtype=torch.int64),
        size=torch.tensor(sizes or [7] * count, dtype=torch.int64),
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


def test_learning_metrics_by_difficulty():
    #        iso  iso      iso  wl1  wl1  wl2  wl3  wl4      wl5
    episodes = _episodes(
        [A, TIMEOUT, R, R, A, R, R, TIMEOUT, A],
        [True, True, True, False, False, False, False, False, False],
        rounds=[2, 8, 4, 2, 2, 4, 6, 8, 2],
        scores=[-1, -1, -1, 1, 1, 2, 3, 4, 5],
    )
    metrics = evaluation.learning_metrics(episodes)
    assert list(metrics) == list(evaluation.LEARNING_METRICS)
    assert metrics["accuracy"] == pytest.approx(4 / 9)
    assert metrics["completeness"] == pytest.approx(1 / 3)
    assert metrics["soundness"] == pytest.approx(3 / 6)
    assert metrics["accuracy_isomorphic"] == pytest.approx(1 / 3)
    assert metrics["accuracy_wl1"] == pytest.approx(1 / 2)
    assert metrics["accuracy_wl2"] == 1.0
    # Scores 3, 4 and 5: one correct, one timeout (wrong), one wrong accept.
    assert metrics["accuracy_wl3plus"] == pytest.approx(1 / 3)
    assert metrics["hard_balanced_accuracy"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert metrics["mean_rounds"] == pytest.approx(38 / 9)
    assert metrics["timeout_rate"] == pytest.approx(2 / 9)


def test_learning_metrics_are_nan_for_empty_groups():
    metrics = evaluation.learning_metrics(
        _episodes([A, R], [True, False], scores=[-1, 1])
    )
    assert metrics["accuracy_wl1"] == 1.0 and metrics["accuracy_isomorphic"] == 1.0
    for key in ("accuracy_wl2", "accuracy_wl3plus", "hard_balanced_accuracy"):
        assert math.isnan(metrics[key]), key
    empty = evaluation.learning_metrics(_episodes([], []))
    assert all(math.isnan(value) for value in empty.values())


def test_learning_metrics_accuracy_is_exactly_the_fraction_correct():
    # float64 rates: callers compare against count / total exactly.
    decisions = [A] * 137 + [R] * 63
    metrics = evaluation.learning_metrics(_episodes(decisions, [True] * 200))
    assert metrics["accuracy"] == 137 / 200


def _neural_pvg_agents():
    protocol = build_protocol("pvg", max_message_rounds=4)
    torch.manual_seed(0)
    return protocol, build_agents(protocol, TINY, TINY, 9)


def test_play_episodes_leaves_the_callers_rng_and_modes_alone(small_pairs):
    protocol, agents = _neural_pvg_agents()
    agents["prover"].train()
    agents["verifier"].eval()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = evaluation.play_episodes(
        agents, protocol, small_pairs, deterministic=False, seed=4
    )
    assert torch.equal(torch.get_rng_state(), before)
    assert agents["prover"].training and not agents["verifier"].training
    # The seed alone fixes the sampled episodes, whatever the caller's RNG state.
    torch.manual_seed(999)
    second = evaluation.play_episodes(
        agents, protocol, small_pairs, deterministic=False, seed=4
    )
    assert torch.equal(first.decision, second.decision)
    assert first.messages == second.messages
    other = evaluation.play_episodes(
        agents, protocol, small_pairs, deterministic=False, seed=5
    )
    assert other.messages != first.messages


def test_play_episodes_default_device_and_cpu_results(small_pairs):
    random = AgentSpec(kind="random")
    protocol = build_protocol("pvg", max_message_rounds=4)
    agents = build_agents(protocol, random, random, 9)
    assert evaluation.agents_device(agents.values()) == torch.device("cpu")
    episodes = evaluation.play_episodes(agents, protocol, small_pairs, device="cpu")
    for tensor in (episodes.decision, episodes.label, episodes.rounds):
        assert tensor.device == torch.device("cpu")
    assert len(episodes.decision) == len(small_pairs["sizes"])


@pytest.mark.gpu
def test_play_episodes_on_cuda_agents(small_pairs):
    protocol, agents = _neural_pvg_agents()
    agents = {name: agent.cuda() for name, agent in agents.items()}
    cpu_state, cuda_state = torch.get_rng_state(), torch.cuda.get_rng_state()
    episodes = evaluation.play_episodes(
        agents, protocol, small_pairs, deterministic=False, seed=1
    )
    assert torch.equal(torch.get_rng_state(), cpu_state)
    assert torch.equal(torch.cuda.get_rng_state(), cuda_state)
    assert episodes.decision.device == torch.device("cpu")
    assert len(episodes.messages) == len(small_pairs["sizes"])
    assert bool((episodes.rounds >= 1).all())


def test_classify_pairs_agrees_with_solo_accuracy(small_pairs):
    protocol = build_protocol("pvg")
    torch.manual_seed(0)
    verifier = build_agents(protocol, TINY, TINY, 9, classifiers=True)["verifier"]
    verifier.train()
    episodes = evaluation.classify_pairs(verifier, small_pairs, batch_size=16)
    assert verifier.training  # its mode is given back
    metrics = evaluation.learning_metrics(episodes)
    assert metrics["accuracy"] == accuracy(verifier, small_pairs, 16)
    assert metrics["mean_rounds"] == 0.0 and metrics["timeout_rate"] == 0.0
