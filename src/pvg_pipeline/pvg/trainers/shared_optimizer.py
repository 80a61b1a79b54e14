"""The agents' optimisers: one Adam per agent, or one over all of them.

With ``shared_optimizer`` (the reference implementation's setting) one Adam holds
every trainable agent's parameters and each gradient step is joint: every agent
computes the PPO loss of its own minibatch (its own active steps only), the
gradients are summed, the sum is clipped to ``max_grad_norm`` as one vector (the
reference clips the gradient of the summed loss) and the one optimiser steps.

So an agent whose gradient is large shrinks every agent's step that minibatch;
with one Adam per agent each agent's gradient is clipped on its own. Where agents
share parameters (``shared_body``) the shared body also has one Adam state and
takes one step per minibatch instead of one per agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from pvg_pipeline.pvg.trainers.ppo_loss import (
    LOSS_NAMES,
    NETWORK_KEYS,
    LossWeights,
    ppo_loss,
)
from pvg_pipeline.pvg.trainers.rollouts import Experience

if TYPE_CHECKING:
    from pvg_pipeline.pvg.trainers.ppo_config import PPOConfig


def make_optimizers(
    trainable: Mapping[str, nn.Module], config: PPOConfig
) -> dict[str, torch.optim.Optimizer]:
    """An Adam per trainable agent, or with ``config.shared_optimizer`` one Adam
    over all their parameters (each shared parameter once) under every name."""
    if not config.shared_optimizer:
        return {
            name: torch.optim.Adam(agent.parameters(), lr=config.learning_rate)
            for name, agent in trainable.items()
        }
    unique = {id(p): p for agent in trainable.values() for p in agent.parameters()}
    if not unique:
        return {}
    shared = torch.optim.Adam(list(unique.values()), lr=config.learning_rate)
    return {name: shared for name in trainable}


def update_agents_jointly(
    agents: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    experience: Experience,
    advantages: Tensor,
    returns: Tensor,
    config: PPOConfig,
    shuffle: torch.Generator,
    concurrent: bool | None = None,
) -> dict[str, dict[str, float]]:
    """PPO epochs for the agents in ``optimizers`` with one shared optimiser; mean
    losses per agent.

    Each agent's minibatches are those of the plain update (the same permutations,
    drawn in the same order); step ``j`` of an epoch takes the ``j``-th minibatch
    of every agent that has one.

    Parameters
    ----------
    concurrent
        Compute the agents' gradients of a step at the same time, one thread each
        with one intra-op thread, as the trainer's fast update does (on 2 cores,
        and far more on a host whose other load leaves intra-op threads waiting
        for each other). ``None``: with several agents on a CPU with several
        threads. Each gradient depends only on its own thread count and they are
        summed in agent order, so results are reproducible run to run.
    """
    if not optimizers:  # no trainable agent
        return {}
    optimizer = _the_shared_optimizer(optimizers)
    weights = config.loss_weights()
    samples, orders = {}, {}
    for index, name in enumerate(agents):
        if name not in optimizers:
            continue
        samples[name] = acted_samples(experience, advantages, returns, index)
        count = samples[name]["advantage"].shape[0]
        orders[name] = [
            torch.randperm(count, generator=shuffle).to(advantages.device)
            for _ in range(config.epochs)
        ]
    if concurrent is None:
        concurrent = (
            len(samples) > 1
            and advantages.device.type == "cpu"
            and torch.get_num_threads() > 1
        )
    threads = torch.get_num_threads()

    def gradient(name: str, batch: Tensor) -> _Gradient:
        if concurrent:
            torch.set_num_threads(1)
        return _gradient(agents[name], samples[name], batch, weights)

    totals = {name: [0.0] * len(LOSS_NAMES) for name in samples}
    steps = dict.fromkeys(samples, 0)
    longest = max(len(order[0]) for order in orders.values())
    pool = ThreadPoolExecutor(max_workers=len(samples)) if concurrent else None
    if concurrent:
        # Also for the optimiser's step here: Adam's many tiny operations gain
        # nothing from a second thread and lose much when the host is busy.
        torch.set_num_threads(1)
    try:
        for epoch in range(config.epochs):
            for start in range(0, longest, config.minibatch_size):
                batches = {
                    name: order[epoch][start : start + config.minibatch_size]
                    for name, order in orders.items()
                }
                # An agent with fewer minibatches sits the last steps out.
                batches = {name: b for name, b in batches.items() if len(b)}
                results = (
                    pool.map(gradient, batches, batches.values())
                    if pool is not None
                    else map(gradient, batches, batches.values())
                )
                optimizer.zero_grad(set_to_none=True)
                for name, (parameters, gradients, reported) in zip(
                    batches, results, strict=True
                ):
                    for parameter, grad in zip(parameters, gradients, strict=True):
                        # A shared body's parameters collect every agent's gradient.
                        previous = parameter.grad
                        parameter.grad = grad if previous is None else previous + grad
                    for position, value in enumerate(reported):
                        totals[name][position] += value
                    steps[name] += 1
                nn.utils.clip_grad_norm_(parameters_of(optimizer), config.max_grad_norm)
                optimizer.step()
    finally:
        if pool is not None:
            pool.shutdown()
            torch.set_num_threads(threads)
    return {
        name: {
            key: total / max(steps[name], 1)
            for key, total in zip(LOSS_NAMES, totals[name], strict=True)
        }
        for name in samples
    }


#: An agent's parameters that have a gradient, their gradients and its
#: four reported losses.
_Gradient = tuple[list[nn.Parameter], list[Tensor], list[float]]


def parameters_of(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    """Every parameter an optimiser steps."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def _gradient(
    agent: nn.Module,
    data: dict[str, Tensor],
    batch: Tensor,
    weights: LossWeights,
) -> _Gradient:
    """The gradient of ``agent``'s PPO loss on the rows ``batch`` of ``data``; left
    out of ``.grad``, so that agents sharing a body can compute theirs at the same
    time."""
    minibatch = {key: value[batch] for key, value in data.items()}
    output = agent(*(minibatch[key] for key in NETWORK_KEYS))
    loss, reported = ppo_loss(output, minibatch, weights, None)
    parameters = [p for p in agent.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    present = [(p, g) for p, g in zip(parameters, grads, strict=True) if g is not None]
    return [p for p, _ in present], [g for _, g in present], reported.tolist()


def _the_shared_optimizer(
    optimizers: Mapping[str, torch.optim.Optimizer],
) -> torch.optim.Optimizer:
    distinct = {id(o): o for o in optimizers.values()}
    if len(distinct) != 1:
        raise ValueError(
            f"shared_optimizer: expected one optimiser for every agent, got "
            f"{len(distinct)} (build them with make_optimizers)"
        )
    return next(iter(distinct.values()))


def acted_samples(
    experience: Experience, advantages: Tensor, returns: Tensor, index: int
) -> dict[str, Tensor]:
    """The network inputs and the loss's data of the steps where agent ``index``
    acted, as the plain update selects them."""
    acted = experience.data["active"][..., index]
    samples = experience.data[acted]
    return {
        **{key: samples[key] for key in NETWORK_KEYS},
        "node": samples["node"][:, index],
        "decision": samples["decision"],
        "decision_allowed": samples["decision_allowed"],
        "old_log_prob": samples["log_prob"][:, index],
        "advantage": advantages[..., index][acted],
        "target": returns[..., index][acted],
    }
