"""Evaluating trained agents on a test split: episodes, metrics, transcripts.

Every test pair is played exactly once under the protocol the agents were trained
with (greedy actions by default, sampled as an option). Solo-agent classifiers are
scored by classifying each pair directly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Bool, Int64
from torch import Tensor, nn

from pvg_pipeline.pvg.classification import classify
from pvg_pipeline.pvg.protocols import Decision, Protocol, ProtocolTensors, Rewards
from pvg_pipeline.pvg.scenarios.graph_isomorphism.game import new_episodes, step
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import MultiAgentPolicy

TIMEOUT = -1

#: Keys of :func:`learning_metrics`, in order.
LEARNING_METRICS = (
    "accuracy",
    "completeness",
    "soundness",
    "accuracy_isomorphic",
    "accuracy_wl1",
    "accuracy_wl2",
    "accuracy_wl3plus",
    "hard_balanced_accuracy",
    "mean_rounds",
    "timeout_rate",
)


@dataclass
class Episodes:
    """One row per test pair: outcome and, for protocols, the messages."""

    decision: Int64[Tensor, "pair"]  # Decision.ACCEPT / REJECT, or TIMEOUT
    label: Bool[Tensor, "pair"]  # is isomorphic
    rounds: Int64[Tensor, "pair"]
    wl_score: Int64[Tensor, "pair"]  # -1 for isomorphic pairs
    size: Int64[Tensor, "pair"]
    messages: list[list[dict[str, Any]]]


def agents_device(agents: Iterable[nn.Module]) -> torch.device:
    """Device of the first parameter of ``agents``; the CPU if they have none."""
    for agent in agents:
        for parameter in agent.parameters():
            return parameter.device
    return torch.device("cpu")


@contextmanager
def _evaluation_mode(agents: Iterable[nn.Module]) -> Iterator[None]:
    # Callers may be mid-training: give every module its own mode back afterwards.
    modules = [m for agent in agents for m in agent.modules()]
    modes = [m.training for m in modules]
    for agent in agents:
        agent.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.training = mode


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    # Evaluation runs inside training loops: the caller's RNG streams must not move.
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.default_generator.manual_seed(seed)
        if forked:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def play_episodes(
    agents: Mapping[str, nn.Module],
    protocol: Protocol,
    pairs: Mapping[str, Tensor],
    deterministic: bool = True,
    batch_size: int = 1024,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> Episodes:
    """Play every pair of ``pairs`` once and record what happened.

    Parameters
    ----------
    agents
        A network per protocol agent; they are put in evaluation mode while playing
        and get their modes back afterwards.
    protocol
        The protocol the agents play.
    pairs
        A graph-pair dataset (``adjacency``, ``sizes``, ``is_isomorphic``,
        ``wl_scores``), on any device.
    deterministic
        Greedy actions (else sampled).
    batch_size
        Pairs played at once.
    seed
        Seeds the sampling and Merlin-Arthur's prover draw. The caller's global RNG
        state (CPU, and ``device`` if CUDA) is the same after the call as before.
    device
        Where to play; default: the device of the first agent parameter (the CPU
        for agents without parameters).

    Returns
    -------
    Episodes
        On the CPU, one row per pair in dataset order.
    """
    device = agents_device(agents.values()) if device is None else torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    policy = MultiAgentPolicy(agents, protocol)
    policy.deterministic = deterministic
    tables = protocol.tensors(device)
    total = len(pairs["sizes"])
    chunks = []
    with _seeded(seed, device), _evaluation_mode(agents.values()):
        for start in range(0, total, batch_size):
            rows = torch.arange(start, min(start + batch_size, total))
            chunks.append(
                _play_chunk(policy, protocol, tables, pairs, rows, seed, device)
            )
    return Episodes(
        decision=torch.cat([c.decision for c in chunks]),
        label=pairs["is_isomorphic"].bool().cpu(),
        rounds=torch.cat([c.rounds for c in chunks]),
        wl_score=pairs["wl_scores"].cpu(),
        size=pairs["sizes"].cpu(),
        messages=[m for c in chunks for m in c.messages],
    )


def _play_chunk(
    policy: MultiAgentPolicy,
    protocol: Protocol,
    tables: ProtocolTensors,
    pairs: Mapping[str, Tensor],
    rows: Int64[Tensor, "chunk"],
    seed: int,
    device: torch.device,
) -> Episodes:
    def take(key: str) -> Tensor:
        return pairs[key][rows.to(pairs[key].device)].to(device)

    count = len(rows)
    choice = torch.randint(
        max(len(protocol.provers), 1),
        (count,),
        generator=torch.Generator().manual_seed(seed),
    )
    state = new_episodes(
        take("adjacency").bool(),
        take("sizes"),
        take("is_isomorphic").bool(),
        rows.to(device),
        choice.to(device),
        protocol,
        tables,
    )
    finished = torch.zeros(count, dtype=torch.bool, device=device)
    decision = torch.full((count,), TIMEOUT, device=device)
    rounds = torch.zeros(count, dtype=torch.int64, device=device)
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
        decision.cpu(),
        torch.empty(0),
        rounds.cpu(),
        torch.empty(0),
        torch.empty(0),
        messages,
    )


def classify_pairs(
    agent: nn.Module, pairs: Mapping[str, Tensor], batch_size: int = 1024
) -> Episodes:
    """Solo-agent outcome per pair: its classification as the decision.

    Runs on the agent's device in evaluation mode (its mode is given back
    afterwards); the episodes come back on the CPU.
    """
    device = agents_device([agent])
    predictions = []
    with torch.no_grad(), _evaluation_mode([agent]):
        for start in range(0, len(pairs["sizes"]), batch_size):
            logits = classify(
                agent,
                pairs["adjacency"][start : start + batch_size].to(device).bool(),
                pairs["sizes"][start : start + batch_size].to(device),
            )
            predictions.append(logits.argmax(-1).cpu())
    accept = torch.cat(predictions).bool()
    decision = torch.where(accept, int(Decision.ACCEPT), int(Decision.REJECT))
    count = len(decision)
    return Episodes(
        decision,
        pairs["is_isomorphic"].bool().cpu(),
        torch.zeros(count, dtype=torch.int64),
        pairs["wl_scores"].cpu(),
        pairs["sizes"].cpu(),
        [[] for _ in range(count)],
    )


def _rate(event: Bool[Tensor, "pair"], among: Bool[Tensor, "pair"]) -> float:
    # float64: the mean of 0/1 values is then exactly count / total.
    if not bool(among.any()):
        return math.nan
    return float(event[among].double().mean())


def learning_metrics(episodes: Episodes) -> dict[str, float]:
    """Accuracy overall and by difficulty, completeness, soundness, rounds.

    Timeouts count as wrong. ``accuracy_wl1``, ``accuracy_wl2`` and
    ``accuracy_wl3plus`` are the accuracy on non-isomorphic pairs whose WL score is
    1, 2 and at least 3; ``accuracy_isomorphic`` the accuracy on isomorphic pairs
    (equal to ``completeness``). ``hard_balanced_accuracy`` is the mean of
    ``accuracy_isomorphic`` and ``accuracy_wl3plus``: the pairs that two rounds of
    WL refinement cannot tell apart, balanced between the two answers. A rate over
    an empty group is NaN.

    Parameters
    ----------
    episodes
        Played (or classified) episodes.

    Returns
    -------
    dict
        The :data:`LEARNING_METRICS` keys.
    """
    accept = episodes.decision == Decision.ACCEPT
    reject = episodes.decision == Decision.REJECT
    label = episodes.label.bool()
    correct = (accept & label) | (reject & ~label)
    score = episodes.wl_score
    everything = torch.ones_like(label)
    isomorphic = _rate(correct, label)
    wl3plus = _rate(correct, ~label & (score >= 3))
    return {
        "accuracy": _rate(correct, everything),
        "completeness": _rate(accept, label),
        "soundness": _rate(reject, ~label),
        "accuracy_isomorphic": isomorphic,
        "accuracy_wl1": _rate(correct, ~label & (score == 1)),
        "accuracy_wl2": _rate(correct, ~label & (score == 2)),
        "accuracy_wl3plus": wl3plus,
        "hard_balanced_accuracy": (isomorphic + wl3plus) / 2,
        "mean_rounds": (
            float(episodes.rounds.double().mean()) if len(label) else math.nan
        ),
        "timeout_rate": _rate(episodes.decision == TIMEOUT, everything),
    }


def summary_metrics(episodes: Episodes) -> dict[str, float | int]:
    """Headline metrics of a set of episodes."""
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
