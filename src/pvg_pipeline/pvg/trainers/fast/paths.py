"""How a PPO run computes, chosen in one place from its settings and device.

:func:`execution_paths` returns the collection policy, the advantage estimator,
the agents' updaters and optimisers, and a record of the choice for the run's
``training_run``. The plain paths (per-agent policy calls, eager GAE, the plain
update) are the reference; each fast path is tested equal to them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pvg_pipeline.pvg.protocols import Protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import MultiAgentPolicy
from pvg_pipeline.pvg.trainers.advantages import (
    advantage_inputs,
    compute_advantages,
    gae_of,
)
from pvg_pipeline.pvg.trainers.fast.captured import CapturedCall
from pvg_pipeline.pvg.trainers.fast.fixed_shape_update import make_updaters
from pvg_pipeline.pvg.trainers.fast.graphed_policy import GraphedPolicy
from pvg_pipeline.pvg.trainers.fast.update_step import AgentUpdater
from pvg_pipeline.pvg.trainers.ppo_config import PPOConfig
from pvg_pipeline.pvg.trainers.ppo_loss import EagerLoss
from pvg_pipeline.pvg.trainers.rollouts import Experience
from pvg_pipeline.pvg.trainers.shared_optimizer import make_optimizers


@dataclass
class ExecutionPaths:
    """What :func:`execution_paths` chose.

    Attributes
    ----------
    policy
        The collection policy.
    estimate_advantages
        Advantages and returns of a collection.
    updaters
        The fixed-shape updaters (empty: the plain update trains the agents).
    optimizers
        Each trainable agent's optimiser (the updaters' own when there are some).
    record
        The choice in words, for ``training_run``.
    """

    policy: MultiAgentPolicy | GraphedPolicy
    estimate_advantages: Callable[[Experience], tuple[Tensor, Tensor]]
    updaters: dict[str, AgentUpdater]
    optimizers: dict[str, torch.optim.Optimizer]
    record: dict[str, Any] = field(default_factory=dict)


def execution_paths(
    agents: Mapping[str, nn.Module],
    protocol: Protocol,
    config: PPOConfig,
    device: torch.device,
    eager_loss: EagerLoss | None = None,
) -> ExecutionPaths:
    """The policy, advantage estimator and update for a run on ``device``."""
    trainable = {n: a for n, a in agents.items() if any(True for _ in a.parameters())}
    updaters = make_updaters(agents, trainable, config, eager_loss)
    optimizers: dict[str, torch.optim.Optimizer] = (
        {name: updater.optimizer for name, updater in updaters.items()}
        if updaters
        else make_optimizers(trainable, config)
    )
    policy = acting_policy(agents, protocol, config, device)
    if not updaters:
        update = "joint (shared optimiser)" if config.shared_optimizer else "plain"
    elif any(updater.graphed for updater in updaters.values()):
        update = "fixed shape, captured as CUDA graphs"
    else:
        update = "fixed shape"
    return ExecutionPaths(
        policy=policy,
        estimate_advantages=advantage_estimator(config, device),
        updaters=updaters,
        optimizers=optimizers,
        record={
            "policy": type(policy).__name__,
            "advantages": "captured" if _captures(config, device) else "eager",
            "update": update,
        },
    )


def _captures(config: PPOConfig, device: torch.device) -> bool:
    return config.cuda_graphs and device.type == "cuda"


def acting_policy(
    agents: Mapping[str, nn.Module],
    protocol: Protocol,
    config: PPOConfig,
    device: torch.device,
) -> MultiAgentPolicy | GraphedPolicy:
    """The collection policy: only the acting agent's rows on CPU; on CUDA (with
    ``cuda_graphs``) every agent on every row, replayed as one CUDA graph."""
    if _captures(config, device):
        return GraphedPolicy(MultiAgentPolicy(agents, protocol, only_active=False))
    return MultiAgentPolicy(agents, protocol)


def advantage_estimator(
    config: PPOConfig, device: torch.device
) -> Callable[[Experience], tuple[Tensor, Tensor]]:
    """:func:`~pvg_pipeline.pvg.trainers.advantages.compute_advantages`; on CUDA
    (with ``cuda_graphs``) replayed as one CUDA graph: eagerly the GAE loop is a
    few hundred kernel launches."""
    if not _captures(config, device):
        return lambda experience: compute_advantages(experience, config)

    def advantages(*inputs: Tensor) -> tuple[Tensor, ...]:
        with torch.no_grad():
            return gae_of(config, *inputs)

    captured = CapturedCall(advantages, "the advantages")

    def estimate(experience: Experience) -> tuple[Tensor, Tensor]:
        advantage, target = captured(*advantage_inputs(experience))
        return advantage, target

    return estimate
