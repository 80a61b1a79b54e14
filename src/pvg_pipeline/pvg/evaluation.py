"""Evaluating trained agents on a test split: episodes, metrics, transcripts.

Every test pair is played exactly once under the protocol the agents were trained
with (greedy actions by default, sampled as an option). Solo-agent classifiers are
scored by classifying each pair directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from pvg_pipeline.pvg.protocols import Decision, Protocol, Rewards
from pvg_pipeline.pvg.scenarios.graph_isomorphism.game import new_episodes, step
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import MultiAgentPolicy
from pvg_pipeline.pvg.trainers.solo_agent import classify

TIMEOUT = -1


@dataclass
class Episodes:
    """One row per test pair: outcome and, for protocols, the messages."""

    decision: Tensor  # Decision.ACCEPT / REJECT, or TIMEOUT
    label: Tensor  # is isomorphic
    rounds: Tensor
    wl_score: Tensor
    size: Tensor
    messages: list[list[dict[str, Any]]]


def play_episodes(
    agents: Mapping[str, nn.Module],
    protocol: Protocol,
    pairs: Mapping[str, Tensor],
    deterministic: bool = True,
    batch_size: int = 1024,
    seed: int = 0,
) -> Episodes:
    """Play every pair of ``pairs`` once and record what happened."""
    torch.manual_seed(seed)
    policy = MultiAgentPolicy(agents, protocol)
    policy.deterministic = deterministic
    for agent in agents.values():
        agent.eval()
    tables = protocol.tensors("cpu")
    chunks = []
    for start in range(0, len(pairs["sizes"]), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(pairs["sizes"])))
        chunks.append(_play_chunk(policy, protocol, tables, pairs, rows, seed))
    return Episodes(
        decision=torch.cat([c.decision for c in chunks]),
        label=pairs["is_isomorphic"].bool(),
        rounds=torch.cat([c.rounds for c in chunks]),
        wl_score=pairs["wl_scores"],
        size=pairs["sizes"],
        messages=[m for c in chunks for m in c.messages],
    )


def _play_chunk(policy, protocol, tables, pairs, rows, seed) -> Episodes:
    count = len(rows)
    choice = torch.randint(
        max(len(protocol.provers), 1),
        (count,),
        generator=torch.Generator().manual_seed(seed),
    )
    state = new_episodes(
        pairs["adjacency"][rows].bool(),
        pairs["sizes"][rows],
        pairs["is_isomorphic"][rows].bool(),
        rows,
        choice,
        protocol,
        tables,
    )
    finished = torch.zeros(count, dtype=torch.bool)
    decision = torch.full((count,), TIMEOUT)
    rounds = torch.zeros(count, dtype=torch.int64)
    messages: list[list[dict[str, Any]]] = [[] for _ in range(count)]
    n = state["adjacency"].shape[-1]
    with torch.no_grad():
        for round_number in range(protocol.max_rounds):
            acted = policy(state.clone(recurse=False))
            for index, name in enumerate(protocol.agents):
                speaking = (state["active"][:, index] & ~finished).nonzero().squeeze(1)
                channels = [
                    c
                    for c, w in zip(
                        protocol.channels, protocol.writes[index], strict=True
                    )
                    if w
                ]
                for row, node in zip(
                    speaking.tolist(),
                    acted["node"][speaking, index].tolist(),
                    strict=True,
                ):
                    messages[row].append(
                        {
                            "round": round_number,
                            "agent": name,
                            "channels": channels,
                            "graph": "ab"[node // n],
                            "node": node % n,
                        }
                    )
            state, _, done = step(
                state, acted["node"], acted["decision"], protocol, tables, Rewards()
            )
            newly = done & ~finished
            decision = torch.where(newly, state["decision"], decision)
            rounds = torch.where(newly, round_number + 1, rounds)
            finished |= done
            if bool(finished.all()):
                break
    return Episodes(
        decision, torch.empty(0), rounds, torch.empty(0), torch.empty(0), messages
    )


def classify_pairs(
    agent: nn.Module, pairs: Mapping[str, Tensor], batch_size: int = 1024
) -> Episodes:
    """Solo-agent outcome per pair: its classification as the decision."""
    agent.eval()
    predictions = []
    with torch.no_grad():
        for start in range(0, len(pairs["sizes"]), batch_size):
            logits = classify(
                agent,
                pairs["adjacency"][start : start + batch_size].bool(),
                pairs["sizes"][start : start + batch_size],
            )
            predictions.append(logits.argmax(-1))
    accept = torch.cat(predictions).bool()
    decision = torch.where(accept, int(Decision.ACCEPT), int(Decision.REJECT))
    count = len(decision)
    return Episodes(
        decision,
        pairs["is_isomorphic"].bool(),
        torch.zeros(count, dtype=torch.int64),
        pairs["wl_scores"],
        pairs["sizes"],
        [[] for _ in range(count)],
    )


def summary_metrics(episodes: Episodes) -> dict[str, float | int]:
    """Headline metrics of a set of episodes (DESIGN.md §7)."""
    accept = episodes.decision == Decision.ACCEPT
    reject = episodes.decision == Decision.REJECT
    label = episodes.label
    correct = (accept & label) | (reject & ~label)

    def rate(mask: Tensor, of: Tensor) -> float:
        return float(mask[of].float().mean()) if bool(of.any()) else float("nan")

    everything = torch.ones_like(label)
    return {
        "pairs": int(len(label)),
        "accuracy": rate(correct, everything),
        "completeness": rate(accept, label),
        "soundness": rate(reject, ~label),
        "acceptance_rate": rate(accept, everything),
        "acceptance_rate_non_isomorphic": rate(accept, ~label),
        "timeout_rate": rate(episodes.decision == TIMEOUT, everything),
        "mean_rounds": (
            float(episodes.rounds.float().mean()) if len(label) else float("nan")
        ),
    }


def breakdown(episodes: Episodes) -> pd.DataFrame:
    """Accuracy and acceptance per WL score and per graph size."""
    accept = episodes.decision == Decision.ACCEPT
    correct = (accept == episodes.label) & (episodes.decision != TIMEOUT)
    frame = pd.DataFrame(
        {
            "wl_score": episodes.wl_score.numpy(),
            "graph_size": episodes.size.numpy(),
            "correct": correct.numpy(),
            "accepted": accept.numpy(),
        }
    )
    parts = []
    for column in ("wl_score", "graph_size"):
        grouped = frame.groupby(column).agg(
            pairs=("correct", "size"),
            accuracy=("correct", "mean"),
            acceptance_rate=("accepted", "mean"),
        )
        grouped = grouped.reset_index().rename(columns={column: "group"})
        grouped.insert(0, "grouping", column)
        parts.append(grouped)
    return pd.concat(parts, ignore_index=True)


def transcripts(episodes: Episodes, count: int, seed: int = 0) -> pd.DataFrame:
    """A seeded sample of episodes with their messages, decision and truth."""
    total = len(episodes.label)
    chosen = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[
        :count
    ]
    names = {
        int(Decision.ACCEPT): "accept",
        int(Decision.REJECT): "reject",
        TIMEOUT: "timeout",
    }
    rows = []
    for index in sorted(chosen.tolist()):
        decision = int(episodes.decision[index])
        truth = bool(episodes.label[index])
        rows.append(
            {
                "pair_index": index,
                "is_isomorphic": truth,
                "wl_score": int(episodes.wl_score[index]),
                "graph_size": int(episodes.size[index]),
                "decision": names[decision],
                "correct": decision != TIMEOUT
                and (decision == Decision.ACCEPT) == truth,
                "rounds": int(episodes.rounds[index]),
                "messages": episodes.messages[index],
            }
        )
    return pd.DataFrame(rows)
