"""What the provers say: how their answers relate to the verifier's questions.

A *question* is a verifier message; its *answers* are the prover messages of the
next round (with two provers, both answers count, whatever channel they were
written to). Over all questions and answers of all episodes:

``prover_answers``
    The number of answers.
``prover_answer_other_graph``
    The fraction of answers naming a node of the other graph than the question.
``prover_answer_same_wl_colour``
    On isomorphic pairs only, the fraction of answers naming a node with the same
    stable WL colour (both graphs refined jointly) as the question's node: nodes
    an isomorphism could map onto each other always share it.
``prover_answer_same_wl_colour_other_graph``
    On isomorphic pairs only, the fraction of answers naming a node of the *other*
    graph with the question's colour: a candidate image of the question's node.
    Repeating the question's node counts for the previous key but not this one.

Fractions are NaN where there is nothing to count (no answers, e.g. solo or
one-message protocols, or no answers on isomorphic pairs).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Bool, Int64
from torch import Tensor

from pvg_pipeline.pvg.evaluation import Episodes
from pvg_pipeline.pvg.protocols import VERIFIER

Message = dict[str, Any]


def stable_colours(
    adjacency: Bool[Tensor, "graph node node"], sizes: Int64[Tensor, "graph"]
) -> Int64[Tensor, "graph node"]:
    """Stable 1-WL colours of several graphs refined jointly (exactly, no hashing).

    Every node starts with one colour; each round a node's new colour is its colour
    with the sorted multiset of its neighbours' colours, renamed to consecutive
    integers in sorted order over all graphs at once, so equal colours in different
    graphs mean the same refinement history. Refinement stops when a round splits
    no colour class. Meant for small graphs (pure Python).

    Parameters
    ----------
    adjacency
        Zero-padded adjacency of each graph.
    sizes
        Number of real nodes of each graph.

    Returns
    -------
    Tensor
        Colour of every real node; ``-1`` on padding nodes.
    """
    matrix = adjacency.bool().tolist()
    counts = [int(s) for s in sizes]
    neighbours = [
        [[u for u in range(size) if rows[v][u]] for v in range(size)]
        for rows, size in zip(matrix, counts, strict=True)
    ]
    colours = [[0] * size for size in counts]
    classes = 1 if sum(counts) else 0
    while True:
        signatures = [
            [(own[v], tuple(sorted(own[u] for u in graph[v]))) for v in range(len(own))]
            for own, graph in zip(colours, neighbours, strict=True)
        ]
        palette = {
            s: index
            for index, s in enumerate(sorted({s for row in signatures for s in row}))
        }
        # A signature includes the old colour, so the new partition refines the
        # old one: the same number of classes means the same partition.
        if len(palette) == classes:
            break
        colours = [[palette[s] for s in row] for row in signatures]
        classes = len(palette)
    result = torch.full(adjacency.shape[:2], -1, dtype=torch.int64)
    for graph, own in enumerate(colours):
        result[graph, : len(own)] = torch.tensor(own, dtype=torch.int64)
    return result


def questions_and_answers(messages: list[Message]) -> list[tuple[Message, Message]]:
    """(question, answer) pairs of one episode's messages.

    An answer is a prover message one round after a verifier message; every prover
    speaking in that round answers the same question.
    """
    pairs = []
    question: Message | None = None
    for message in messages:
        if message["agent"] == VERIFIER:
            question = message
        elif question is not None and message["round"] == question["round"] + 1:
            pairs.append((question, message))
    return pairs


def message_statistics(
    episodes: Episodes, adjacency: Bool[Tensor, "pair 2 node node"]
) -> dict[str, float | int]:
    """How the provers' answers relate to the verifier's questions.

    Parameters
    ----------
    episodes
        Played episodes, one per pair in dataset order.
    adjacency
        The played pairs' adjacency (``graph_pairs["adjacency"]``).

    Returns
    -------
    dict
        ``prover_answers``, ``prover_answer_other_graph``,
        ``prover_answer_same_wl_colour`` and
        ``prover_answer_same_wl_colour_other_graph`` (see the module docstring).
    """
    answers = other_graph = isomorphic = same_colour = image = 0
    for index, transcript in enumerate(episodes.messages):
        exchanges = questions_and_answers(transcript)
        if not exchanges:
            continue
        answers += len(exchanges)
        other_graph += sum(q["graph"] != a["graph"] for q, a in exchanges)
        if not bool(episodes.label[index]):
            continue
        colours = stable_colours(
            adjacency[index].cpu(), episodes.size[index].cpu().repeat(2)
        )
        for question, answer in exchanges:
            same = bool(
                colours["ab".index(question["graph"]), question["node"]]
                == colours["ab".index(answer["graph"]), answer["node"]]
            )
            isomorphic += 1
            same_colour += same
            image += same and question["graph"] != answer["graph"]
    return {
        "prover_answers": answers,
        "prover_answer_other_graph": _fraction(other_graph, answers),
        "prover_answer_same_wl_colour": _fraction(same_colour, isomorphic),
        "prover_answer_same_wl_colour_other_graph": _fraction(image, isomorphic),
    }


def _fraction(count: int, total: int) -> float:
    return count / total if total else math.nan
