"""Questions, answers and stable WL colours of hand-built transcripts and graphs."""

from __future__ import annotations

import math

import pytest
import torch

from pvg_pipeline.pvg.evaluation import Episodes
from pvg_pipeline.pvg.graphs.weisfeiler_lehman import refine_colours
from pvg_pipeline.pvg.message_statistics import (
    message_statistics,
    questions_and_answers,
    stable_colours,
)


def _graph(edges: list[tuple[int, int]], n: int = 5) -> torch.Tensor:
    adjacency = torch.zeros(n, n, dtype=torch.bool)
    for u, v in edges:
        adjacency[u, v] = adjacency[v, u] = True
    return adjacency


def _message(round_number: int, agent: str, graph: str, node: int) -> dict:
    return {
        "round": round_number,
        "agent": agent,
        "channels": [],
        "graph": graph,
        "node": node,
    }


def test_path_ends_share_a_colour_the_middle_differs():
    path = _graph([(0, 1), (1, 2)])
    colours = stable_colours(path[None], torch.tensor([3]))
    assert colours[0, 0] == colours[0, 2] != colours[0, 1]
    assert colours[0, 3:].tolist() == [-1, -1]  # padding


def test_colours_are_joint_and_refined_until_stable():
    # The path's middle and the triangle's nodes both have degree 2: only the
    # second round (neighbours' degrees) tells them apart.
    path, triangle = _graph([(0, 1), (1, 2)]), _graph([(0, 1), (1, 2), (2, 0)])
    colours = stable_colours(torch.stack([path, triangle]), torch.tensor([3, 3]))
    assert len(set(colours[1, :3].tolist())) == 1
    assert colours[0, 1] != colours[1, 0]
    assert colours[0, 0] == colours[0, 2]
    # A hexagon and two triangles: 1-WL cannot separate them, so one colour.
    hexagon = _graph([(i, (i + 1) % 6) for i in range(6)], 6)
    triangles = _graph([(0, 1), (1, 2), (2, 0), (3, 4), (4, 5), (5, 3)], 6)
    colours = stable_colours(torch.stack([hexagon, triangles]), torch.tensor([6, 6]))
    assert colours.unique().tolist() == [0]
    # A path of 5 needs two rounds past degrees: ends, their neighbours, centre.
    long_path = _graph([(0, 1), (1, 2), (2, 3), (3, 4)])
    colours = stable_colours(long_path[None], torch.tensor([5]))[0]
    assert colours[0] == colours[4] and colours[1] == colours[3]
    assert len({int(colours[0]), int(colours[1]), int(colours[2])}) == 3


def test_colours_agree_with_the_hashed_refinement(prime_table):
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        upper = torch.rand(2, 9, 9, generator=generator) < 0.35
        adjacency = (upper.triu(1) | upper.triu(1).transpose(-1, -2)).clone()
        colours = stable_colours(adjacency, torch.tensor([9, 9])).flatten()
        hashed = torch.zeros(2, 9, dtype=torch.int64)
        for _ in range(18):  # more rounds than nodes: the partition is stable
            hashed = refine_colours(adjacency, hashed, prime_table)
        hashed = hashed.flatten()
        # Same partition of the 18 nodes of both graphs.
        assert torch.equal(
            colours[:, None] == colours[None, :], hashed[:, None] == hashed[None, :]
        )


def test_answers_are_the_prover_messages_of_the_next_round():
    verifier_first = [
        _message(0, "verifier", "a", 0),
        _message(1, "prover", "b", 1),
        _message(2, "verifier", "b", 2),
        _message(3, "prover", "a", 3),
    ]
    assert [
        (q["node"], a["node"]) for q, a in questions_and_answers(verifier_first)
    ] == [(0, 1), (2, 3)]
    # The prover's opening message answers nothing.
    prover_first = [
        _message(0, "prover", "a", 4),
        _message(1, "verifier", "b", 2),
        _message(2, "prover", "a", 3),
    ]
    assert [(q["node"], a["node"]) for q, a in questions_and_answers(prover_first)] == [
        (2, 3)
    ]
    # Two provers answer the same question.
    debate = [
        _message(0, "verifier", "a", 0),
        _message(1, "prover_0", "b", 1),
        _message(1, "prover_1", "a", 2),
        _message(2, "verifier", "a", 3),
    ]
    assert [(q["node"], a["agent"]) for q, a in questions_and_answers(debate)] == [
        (0, "prover_0"),
        (0, "prover_1"),
    ]
    # One message then a decision (adp, Merlin-Arthur): no question answered.
    one_message = [_message(0, "prover", "a", 0), _message(1, "verifier", "a", 0)]
    assert questions_and_answers(one_message) == []
    # A prover speaking in the verifier's own round has not seen the question.
    same_round = [_message(0, "verifier", "a", 0), _message(0, "prover", "b", 0)]
    assert questions_and_answers(same_round) == []


def _pair_episodes(messages: list[list[dict]], labels: list[bool]) -> Episodes:
    count = len(messages)
    return Episodes(
        decision=torch.zeros(count, dtype=torch.int64),
        label=torch.tensor(labels),
        rounds=torch.ones(count, dtype=torch.int64),
        wl_score=torch.tensor([-1 if label else 1 for label in labels]),
        size=torch.full((count,), 3),
        messages=messages,
    )


def test_message_statistics_of_hand_built_transcripts():
    # Pair 0 (isomorphic): paths 0-1-2 and 1-0-2 (middles 1 and 0).
    # Pair 1 (not): a path and a triangle.
    adjacency = torch.stack(
        [
            torch.stack([_graph([(0, 1), (1, 2)], 3), _graph([(1, 0), (0, 2)], 3)]),
            torch.stack(
                [_graph([(0, 1), (1, 2)], 3), _graph([(0, 1), (1, 2), (2, 0)], 3)]
            ),
        ]
    )
    isomorphic = [
        _message(0, "verifier", "a", 0),  # an end ...
        _message(1, "prover", "b", 1),  # ... its image: other graph, same colour
        _message(2, "verifier", "b", 0),  # b's middle ...
        _message(3, "prover", "b", 0),  # ... repeated: same graph, same colour
        _message(4, "verifier", "a", 1),  # a's middle ...
        _message(5, "prover", "b", 2),  # ... answered by an end: other graph
    ]
    non_isomorphic = [_message(0, "verifier", "a", 1), _message(1, "prover", "b", 0)]
    episodes = _pair_episodes([isomorphic, non_isomorphic, []], [True, False, True])
    adjacency = torch.cat([adjacency, adjacency[:1]])
    stats = message_statistics(episodes, adjacency)
    assert stats["prover_answers"] == 4
    assert stats["prover_answer_other_graph"] == pytest.approx(3 / 4)
    # Colours only on the isomorphic pair's three answers.
    assert stats["prover_answer_same_wl_colour"] == pytest.approx(2 / 3)
    assert stats["prover_answer_same_wl_colour_other_graph"] == pytest.approx(1 / 3)


def test_message_statistics_without_answers_are_nan():
    episodes = _pair_episodes([[], [_message(0, "prover", "a", 0)]], [True, False])
    stats = message_statistics(episodes, torch.zeros(2, 2, 3, 3, dtype=torch.bool))
    assert stats["prover_answers"] == 0
    for key in (
        "prover_answer_other_graph",
        "prover_answer_same_wl_colour",
        "prover_answer_same_wl_colour_other_graph",
    ):
        assert math.isnan(stats[key]), key
