"""The trainer's fast PPO update: fixed-shape steps per agent, run concurrently.

:class:`~pvg_pipeline.pvg.trainers.fast.update_step.AgentUpdater` runs one agent's
steps; this module plans the minibatches (the plain path's permutations) and runs
the agents' updates side by side: one thread each on a CPU, one CUDA stream each
for captured steps on a GPU (``PVG_CUDA_STREAMS=0``: one after the other).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from pvg_pipeline.pvg import overrides
from pvg_pipeline.pvg.trainers.fast.flat_parameters import flattenable
from pvg_pipeline.pvg.trainers.fast.update_step import AgentUpdater
from pvg_pipeline.pvg.trainers.ppo_loss import EagerLoss
from pvg_pipeline.pvg.trainers.rollouts import Experience

if TYPE_CHECKING:
    from pvg_pipeline.pvg.trainers.ppo_config import PPOConfig


def make_updaters(
    agents: Mapping[str, nn.Module],
    trainable: Mapping[str, nn.Module],
    config: PPOConfig,
    eager_loss: EagerLoss | None = None,
) -> dict[str, AgentUpdater]:
    """Fixed-shape updaters for the trainable agents (none when agents share
    parameters or ``shared_optimizer`` is set: the plain path trains those);
    ``eager_loss`` is an accelerator's loss for their eager steps."""
    if config.shared_optimizer or not flattenable(dict(trainable)):
        return {}
    capacity = config.num_envs * config.steps_per_iteration
    return {
        name: AgentUpdater(
            agent,
            index,
            capacity,
            min(config.minibatch_size, capacity),
            config.learning_rate,
            config.loss_weights(),
            cuda_graph=config.cuda_graphs,
            compile_loss=config.compile,
            eager_loss=eager_loss,
        )
        for index, (name, agent) in enumerate(agents.items())
        if name in trainable
    }


def minibatch_plan(
    acted: Tensor, epochs: int, minibatch_size: int, shuffle: torch.Generator
) -> tuple[Tensor, list[int]]:
    """Frame rows of every minibatch of every epoch, padded to ``minibatch_size``.

    Draws the same permutations as the plain path. Returns ``(steps, minibatch)``
    rows (padding repeats the minibatch's first sample) and each step's number of
    real samples.
    """
    acted_rows = acted.nonzero().squeeze(1).cpu()
    count = len(acted_rows)
    plans, sizes = [], []
    for _ in range(epochs):
        order = acted_rows[torch.randperm(count, generator=shuffle)]
        for start in range(0, count, minibatch_size):
            rows = order[start : start + minibatch_size]
            padding = rows[:1].expand(minibatch_size - len(rows))
            plans.append(torch.cat([rows, padding]))
            sizes.append(len(rows))
    if not plans:
        return torch.zeros(0, minibatch_size, dtype=torch.int64), []
    return torch.stack(plans), sizes


def update_agents_fixed_shape(
    updaters: Mapping[str, AgentUpdater],
    experience: Experience,
    advantages: Tensor,
    returns: Tensor,
    config: PPOConfig,
    shuffle: torch.Generator,
    concurrent: bool | None = None,
) -> dict[str, dict[str, float]]:
    """PPO epochs for every agent through its :class:`AgentUpdater` (fast path):
    same minibatches and losses as the plain ``update_agents``.

    Parameters
    ----------
    concurrent
        Update the agents at the same time. On a CPU: one thread each with one
        intra-op thread. At these sizes a CPU operation gains little from a second
        thread (~10 %), so two agents side by side use the cores far better (~40 %
        less time for ``pvg`` on 2 cores); each agent's result depends only on its
        own thread count, so it is reproducible run to run. On a GPU: each agent's
        captured steps replay on its own stream, so the small kernels of the two
        graphs share the device; the kernels are the same, so are the results.
        ``None``: with several agents, on a CPU with several threads, on a GPU
        unless ``PVG_CUDA_STREAMS=0``.
    """
    data = experience.data.reshape(-1)
    plans = {}
    # Minibatch plans are drawn in agent order first: same permutations either way.
    for name, updater in updaters.items():
        index = updater.index
        updater.load(
            data, advantages[..., index].reshape(-1), returns[..., index].reshape(-1)
        )
        plans[name] = minibatch_plan(
            data["active"][:, index], config.epochs, updater.minibatch_size, shuffle
        )
    on_streams = all(u.stream is not None for u in updaters.values())
    if concurrent is None:
        on_cpu = all(u.flat.parameter.device.type == "cpu" for u in updaters.values())
        concurrent = len(updaters) > 1 and (
            overrides.enabled("PVG_CUDA_STREAMS")
            if on_streams
            else on_cpu and torch.get_num_threads() > 1
        )
    if not concurrent:
        return {
            name: updater.mean_losses(updater.run(*plans[name]))
            for name, updater in updaters.items()
        }
    if on_streams:
        return _update_on_streams(updaters, plans)
    threads = torch.get_num_threads()

    def update(name: str) -> dict[str, float]:
        torch.set_num_threads(1)
        updater = updaters[name]
        return updater.mean_losses(updater.run(*plans[name]))

    try:
        with ThreadPoolExecutor(max_workers=len(updaters)) as pool:
            return dict(zip(updaters, pool.map(update, updaters), strict=True))
    finally:
        torch.set_num_threads(threads)


def _update_on_streams(
    updaters: Mapping[str, AgentUpdater], plans: dict[str, tuple[Tensor, list[int]]]
) -> dict[str, dict[str, float]]:
    """Replay each agent's steps on its own CUDA stream (queued without waiting:
    a replay takes the host microseconds, the device about a millisecond)."""
    main = torch.cuda.current_stream()
    steps = {}
    for name, updater in updaters.items():
        assert updater.stream is not None
        updater.stream.wait_stream(main)  # after load() wrote the static buffers
        with torch.cuda.stream(updater.stream):
            steps[name] = updater.run(*plans[name])
    for updater in updaters.values():
        assert updater.stream is not None
        # The losses are read, and the next collection acts, on the main stream.
        main.wait_stream(updater.stream)
    return {name: updaters[name].mean_losses(steps[name]) for name in updaters}
