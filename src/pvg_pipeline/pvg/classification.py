"""A solo agent's direct classification of a pair, shared by training and evaluation.

Kept apart from the trainers so that evaluation (which the trainers call) can use
it without importing the trainers.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int64
from torch import Tensor, nn

from pvg_pipeline.pvg.protocols import Decision

#: Decider logits used as the two classes: index 0 = non-isomorphic (reject).
CLASSES = [int(Decision.REJECT), int(Decision.ACCEPT)]


def classify(
    agent: nn.Module,
    adjacency: Bool[Tensor, "batch 2 node node"],
    sizes: Int64[Tensor, "batch"],
) -> Float[Tensor, "batch 2"]:
    """Logits ``(batch, 2)`` (non-isomorphic, isomorphic) from the graphs alone."""
    batch, _, n, _ = adjacency.shape
    node_mask = torch.arange(n, device=adjacency.device) < sizes[:, None]
    node_mask = node_mask[:, None, :].expand(-1, 2, -1)
    rounds = agent.shape.max_rounds
    channels = len(agent.shape.visible_channels)
    history = torch.zeros(batch, rounds, channels, 2, n, device=adjacency.device)
    round_number = torch.zeros(batch, dtype=torch.int64, device=adjacency.device)
    output = agent(adjacency, node_mask, history, round_number)
    return output.decision_logits[:, CLASSES]
