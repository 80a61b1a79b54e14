"""Random PPO minibatches for testing the loss implementations against each other."""

from __future__ import annotations

import torch
from torch import Tensor

from pvg_pipeline.pvg.protocols import Decision
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import AgentOutput
from pvg_pipeline.pvg.trainers.ppo_loss import LossWeights

SETTINGS = LossWeights(
    clip_epsilon=0.2,
    entropy_coefficient=0.01,
    value_coefficient=0.5,
    max_grad_norm=1.0,
    normalize_advantage=True,
)


def minibatch(
    rows: int, verifier: bool, seed: int = 0, nodes: int = 22, spread: float = 1.0
) -> tuple[AgentOutput, dict[str, Tensor]]:
    """Heads' outputs (leaves) with padding logits, and the minibatch's data;
    ``spread`` scales the log-prob changes (large: many clipped ratios)."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, nodes, generator=generator)
    padding = torch.rand(rows, nodes, generator=generator) < 0.3
    padding[:, 0] = False  # every row has a real node
    logits = logits.masked_fill(padding, float("-inf"))
    real = (~padding).float()
    node = torch.multinomial(real, 1, generator=generator).squeeze(1)
    output = AgentOutput(
        logits.requires_grad_(),
        (
            torch.randn(rows, 3, generator=generator).requires_grad_()
            if verifier
            else None
        ),
        torch.randn(rows, generator=generator).requires_grad_(),
    )
    allowed = torch.rand(rows, generator=generator) < 0.5
    decision = torch.randint(0, 3, (rows,), generator=generator)
    decision = torch.where(allowed, decision, int(Decision.CONTINUE))
    # Old log-probs near the current ones, so that ratios fall on both sides of
    # the clipping range.
    with torch.no_grad():
        current = logits.log_softmax(-1).gather(1, node[:, None]).squeeze(1)
    data = {
        "node": node,
        "decision": decision,
        "decision_allowed": allowed,
        "old_log_prob": current + spread * 0.3 * torch.randn(rows, generator=generator),
        "advantage": torch.randn(rows, generator=generator) * 3 + 1,
        "target": torch.randn(rows, generator=generator),
    }
    return output, data


def fields(
    output: AgentOutput,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """The three outputs the loss differentiates."""
    return output.node_logits, output.decision_logits, output.value


def leaves(output: AgentOutput) -> AgentOutput:
    """Fresh leaf copies of ``output``, so that each loss gets its own gradients."""
    return AgentOutput(
        *(
            None if t is None else t.detach().clone().requires_grad_()
            for t in fields(output)
        )
    )
