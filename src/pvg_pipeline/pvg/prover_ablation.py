"""Prover ablation: the trained verifier playing against uniformly random provers.

If the verifier does as well against random provers as against its trained ones,
it decides without using what they say.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pvg_pipeline.pvg.evaluation import (
    LEARNING_METRICS,
    agents_device,
    learning_metrics,
    play_episodes,
)
from pvg_pipeline.pvg.protocols import Protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import RandomAgent

#: Prefix of the keys of :func:`random_prover_metrics`.
PREFIX = "random_prover_"


def not_applicable() -> dict[str, float]:
    """The keys of :func:`random_prover_metrics`, all NaN (no prover to replace)."""
    return {f"{PREFIX}{key}": math.nan for key in LEARNING_METRICS}


def random_prover_metrics(
    agents: Mapping[str, nn.Module],
    protocol: Protocol,
    pairs: Mapping[str, Tensor],
    deterministic: bool = True,
    batch_size: int = 1024,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Learning metrics with every prover replaced by a uniformly random one.

    How much the verifier relies on what its provers say: if these metrics are
    close to the trained provers' ones, the verifier decides without them. Keys are
    :data:`LEARNING_METRICS` prefixed with ``random_prover_``; all NaN when the
    protocol has no prover.
    """
    if not protocol.provers:
        return not_applicable()
    if device is None:
        device = agents_device(agents.values())
    ablated = {
        name: RandomAgent(is_verifier=False) if name in protocol.provers else agent
        for name, agent in agents.items()
    }
    episodes = play_episodes(
        ablated, protocol, pairs, deterministic, batch_size, seed, device
    )
    metrics = learning_metrics(episodes)
    return {f"{PREFIX}{key}": value for key, value in metrics.items()}
