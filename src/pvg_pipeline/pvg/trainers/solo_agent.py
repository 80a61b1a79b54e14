"""Supervised solo-agent baselines: classify isomorphic / non-isomorphic pairs.

Each agent's network sees only the two graphs (no messages) and is trained with
cross-entropy on the *train* split; accuracy is reported on the *test* split (the
predecessor trained on its test split by mistake), and for the verifier every
learning metric of :func:`pvg_pipeline.pvg.evaluation.learning_metrics` with the
``test_`` prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pvg_pipeline.pvg.classification import classify
from pvg_pipeline.pvg.evaluation import classify_pairs, learning_metrics
from pvg_pipeline.pvg.protocols import VERIFIER

__all__ = ["SoloAgentConfig", "accuracy", "classify", "train_solo_agents"]


@dataclass(frozen=True)
class SoloAgentConfig:
    """Supervised training settings."""

    epochs: int = 100
    batch_size: int = 256
    learning_rate: float = 1e-3


def accuracy(agent: nn.Module, pairs: Mapping[str, Tensor], batch_size: int) -> float:
    """Fraction of ``pairs`` classified correctly (evaluation mode)."""
    agent.eval()
    device = next(agent.parameters()).device
    correct = 0
    with torch.no_grad():
        for start in range(0, len(pairs["sizes"]), batch_size):
            adjacency = pairs["adjacency"][start : start + batch_size].to(device)
            sizes = pairs["sizes"][start : start + batch_size].to(device)
            labels = pairs["is_isomorphic"][start : start + batch_size].to(device)
            predicted = classify(agent, adjacency, sizes).argmax(-1).bool()
            correct += int((predicted == labels).sum())
    return correct / max(len(pairs["sizes"]), 1)


def train_solo_agents(
    agents: Mapping[str, nn.Module],
    train_pairs: Mapping[str, Tensor],
    test_pairs: Mapping[str, Tensor],
    config: SoloAgentConfig,
    seed: int,
    device: torch.device,
    on_iteration: Callable[[dict[str, float]], None] | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train every agent as a classifier; one metrics row per epoch.

    A row holds ``iteration``, ``train_loss_<agent>`` and ``test_accuracy_<agent>``
    for every agent, and the verifier's test-split learning metrics as ``test_``
    followed by a :data:`pvg_pipeline.pvg.evaluation.LEARNING_METRICS` key.
    """
    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed + 1)
    optimizers = {
        name: torch.optim.Adam(agent.to(device).parameters(), lr=config.learning_rate)
        for name, agent in agents.items()
    }
    adjacency = train_pairs["adjacency"].to(device)
    sizes = train_pairs["sizes"].to(device)
    labels = train_pairs["is_isomorphic"].to(device).long()
    history: list[dict[str, float]] = []
    for epoch in tqdm(range(config.epochs), desc="solo agents", disable=not progress):
        row: dict[str, float] = {"iteration": epoch + 1}
        order = torch.randperm(len(labels), generator=shuffle).to(device)
        for name, agent in agents.items():
            agent.train()
            total, batches = 0.0, 0
            for start in range(0, len(order), config.batch_size):
                batch = order[start : start + config.batch_size]
                logits = classify(agent, adjacency[batch], sizes[batch])
                loss = nn.functional.cross_entropy(logits, labels[batch])
                optimizers[name].zero_grad(set_to_none=True)
                loss.backward()
                optimizers[name].step()
                total += float(loss.detach())
                batches += 1
            row[f"train_loss_{name}"] = total / max(batches, 1)
            if name == VERIFIER:
                # The same rates the evaluate pipeline reports, per epoch.
                episodes = classify_pairs(agent, test_pairs, config.batch_size)
                metrics = learning_metrics(episodes)
                row[f"test_accuracy_{name}"] = metrics["accuracy"]
                row |= {f"test_{key}": value for key, value in metrics.items()}
            else:
                row[f"test_accuracy_{name}"] = accuracy(
                    agent, test_pairs, config.batch_size
                )
        history.append(row)
        if on_iteration is not None:
            on_iteration(row)
    return history
