"""Independent PPO for every agent of a protocol, readable top to bottom.

One iteration: collect ``steps_per_iteration x num_envs`` frames with the current
policy (each network runs only where its agent acts), compute per-agent GAE over
each agent's own active steps, then for each agent run ``epochs`` passes of
minibatch updates on the steps where it acted: clipped surrogate, value loss,
entropy bonus, per-minibatch advantage normalisation, gradient-norm clipping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pvg_pipeline.pvg.allocator import retain_freed_memory
from pvg_pipeline.pvg.errors import RunError
from pvg_pipeline.pvg.protocols import Protocol, Rewards
from pvg_pipeline.pvg.scenarios.graph_isomorphism.environment import (
    GraphIsomorphismEnv,
)
from pvg_pipeline.pvg.trainers.advantages import compute_advantages
from pvg_pipeline.pvg.trainers.checkpoints import CheckpointStore, TrainingState
from pvg_pipeline.pvg.trainers.diagnostics import held_out_metrics, update_diagnostics
from pvg_pipeline.pvg.trainers.fast.fixed_shape_update import (
    make_updaters,
    minibatch_plan,
    update_agents_fixed_shape,
)
from pvg_pipeline.pvg.trainers.fast.paths import (
    acting_policy,
    advantage_estimator,
    execution_paths,
)
from pvg_pipeline.pvg.trainers.observation_statistics import fit_observation_statistics
from pvg_pipeline.pvg.trainers.ppo_config import PPOConfig
from pvg_pipeline.pvg.trainers.ppo_loss import (
    LOSS_NAMES,
    NETWORK_KEYS,
    EagerLoss,
    ppo_loss,
)
from pvg_pipeline.pvg.trainers.rollouts import Experience, collect
from pvg_pipeline.pvg.trainers.shared_optimizer import (
    acted_samples,
    make_optimizers,
    update_agents_jointly,
)

__all__ = [
    "PPOConfig",
    "TrainingDiverged",
    "acting_policy",
    "advantage_estimator",
    "compute_advantages",
    "make_optimizers",
    "make_updaters",
    "minibatch_plan",
    "train_ppo",
    "update_agents",
    "update_agents_fixed_shape",
]


def last_good_checkpoint(checkpoints: CheckpointStore | None, config: PPOConfig) -> str:
    """Where a diverged run can be resumed from, or that it cannot."""
    saved = checkpoints.iterations() if checkpoints else []
    if not saved:
        return (
            "no checkpoint was written yet (every "
            f"{config.checkpoint_interval} iterations): start again, e.g. with a "
            "lower trainer.ppo.learning_rate"
        )
    path = checkpoints.directory / f"iteration_{saved[-1]:07d}.pt"
    return (
        f"the last good checkpoint is {path}: resume it with trainer.resume=true "
        "(a lower trainer.ppo.learning_rate is allowed)"
    )


class TrainingDiverged(RunError):
    """A loss became NaN or infinite."""


def train_ppo(
    agents: Mapping[str, nn.Module],
    protocol: Protocol,
    rewards: Rewards,
    pairs: Mapping[str, Tensor],
    config: PPOConfig,
    seed: int,
    device: torch.device,
    checkpoints: CheckpointStore | None = None,
    resume: TrainingState | None = None,
    on_iteration: Callable[[dict[str, float]], None] | None = None,
    progress: bool = True,
    evaluation_pairs: Mapping[str, Tensor] | None = None,
    eager_loss: EagerLoss | None = None,
    run_record: dict[str, Any] | None = None,
) -> list[dict[str, float]]:
    """Train ``agents`` in place and return one metrics row per iteration.

    Parameters
    ----------
    evaluation_pairs
        Held-out pairs (the test split) played greedily every
        ``config.eval_interval`` iterations and at the last; their metrics
        (``test_accuracy``, ...) and the update diagnostics (``approx_kl_<agent>``,
        ...) go into those iterations' rows.
    checkpoints
        Where a checkpoint is written every ``checkpoint_interval`` iterations.
    resume
        A checkpoint to continue from; the result is bit-identical on CPU to an
        uninterrupted run with the same seed.
    on_iteration
        Called with each iteration's metrics (tracking, progress reporting).
    eager_loss
        An accelerator's minibatch loss for the eager update (see
        :func:`pvg_pipeline.accelerate.accelerate`).
    run_record
        Receives ``execution``: which paths computed the run
        (:func:`~pvg_pipeline.pvg.trainers.fast.paths.execution_paths`).
    """
    if device.type == "cpu":
        retain_freed_memory()  # 40 000-120 000 page faults fewer per iteration
    torch.manual_seed(seed)
    env = GraphIsomorphismEnv(
        pairs, protocol, rewards, config.num_envs, seed=seed, device=device
    )
    for agent in agents.values():
        agent.to(device).eval()  # see docs: batch norm uses running statistics
    if resume is None:  # a checkpoint holds the fitted statistics
        fit_observation_statistics(
            agents,
            pairs,
            protocol,
            rewards,
            config.num_envs,
            config.observation_normalisation_steps,
            seed + 3,
            device,
        )
    paths = execution_paths(agents, protocol, config, device, eager_loss)
    policy, estimate_advantages = paths.policy, paths.estimate_advantages
    updaters, optimizers = paths.updaters, paths.optimizers
    if run_record is not None:
        run_record["execution"] = paths.record
    try:
        shuffle = torch.Generator().manual_seed(seed + 1)
        history: list[dict[str, float]] = []
        start_iteration = 0
        if resume is not None:
            start_iteration, history = resume.restore(
                agents, optimizers, env, shuffle, config.learning_rate
            )
        bar = tqdm(
            range(start_iteration, config.iterations),
            initial=start_iteration,
            total=config.iterations,
            desc="ppo",
            disable=not progress,
        )
        for iteration in bar:
            started = time.perf_counter()
            with torch.no_grad():
                experience = collect(
                    env, policy, config.steps_per_iteration, config.gamma
                )
                advantages, returns = estimate_advantages(experience)
            metrics = _episode_metrics(experience, protocol)
            if updaters:
                losses = update_agents_fixed_shape(
                    updaters, experience, advantages, returns, config, shuffle
                )
            else:
                losses = update_agents(
                    agents, optimizers, experience, advantages, returns, config, shuffle
                )
            for name, agent_losses in losses.items():
                for key, value in agent_losses.items():
                    if not math.isfinite(value):
                        raise TrainingDiverged(
                            f"{key} of agent {name!r} is {value} at iteration "
                            f"{iteration + 1}; "
                            + last_good_checkpoint(checkpoints, config)
                        )
                    metrics[f"{key}_{name}"] = value
            frames = config.num_envs * config.steps_per_iteration
            metrics = {"iteration": iteration + 1, **metrics}
            metrics["frames_per_second"] = frames / (time.perf_counter() - started)
            if (iteration + 1) % config.eval_interval == 0 or (
                iteration + 1 == config.iterations
            ):
                metrics |= update_diagnostics(
                    agents, experience, returns, config.clip_epsilon
                )
                if evaluation_pairs is not None:
                    metrics |= held_out_metrics(
                        agents, protocol, evaluation_pairs, device
                    )
            history.append(metrics)
            bar.set_postfix(
                fps=f"{metrics['frames_per_second']:.0f}",
                acc=f"{metrics['verifier_accuracy']:.2f}",
                **{n: f"{metrics[f'reward_{n}']:.2f}" for n in protocol.agents},
            )
            if on_iteration is not None:
                on_iteration(metrics)
            if (
                checkpoints is not None
                and (iteration + 1) % config.checkpoint_interval == 0
            ):
                checkpoints.save(
                    TrainingState.capture(
                        iteration + 1, agents, optimizers, env, shuffle, history
                    )
                )
        return history
    finally:
        for updater in updaters.values():
            updater.release()


def update_agents(
    agents: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    experience: Experience,
    advantages: Tensor,
    returns: Tensor,
    config: PPOConfig,
    shuffle: torch.Generator,
) -> dict[str, dict[str, float]]:
    """PPO epochs for every agent that has an optimiser; mean losses per agent.

    The plain reference path (variable-size minibatches, per-parameter Adam); the
    trainer uses :func:`update_agents_fixed_shape` unless agents share parameters
    or one optimiser (``shared_optimizer``: joint steps, see
    :func:`~pvg_pipeline.pvg.trainers.shared_optimizer.update_agents_jointly`).
    """
    if config.shared_optimizer:
        return update_agents_jointly(
            agents, optimizers, experience, advantages, returns, config, shuffle
        )
    return {
        name: _update_agent(
            agent,
            optimizers[name],
            experience,
            advantages,
            returns,
            index,
            config,
            shuffle,
        )
        for index, (name, agent) in enumerate(agents.items())
        if name in optimizers
    }


def _update_agent(
    agent: nn.Module,
    optimizer: torch.optim.Optimizer,
    experience: Experience,
    advantages: Tensor,
    returns: Tensor,
    index: int,
    config: PPOConfig,
    shuffle: torch.Generator,
) -> dict[str, float]:
    """PPO epochs for one agent over the steps where it acted, with
    :func:`~pvg_pipeline.pvg.trainers.ppo_loss.ppo_loss`."""
    samples = acted_samples(experience, advantages, returns, index)
    count = len(samples["advantage"])
    weights = config.loss_weights()
    totals = torch.zeros(len(LOSS_NAMES), dtype=torch.float64)
    updates = 0
    for _ in range(config.epochs):
        order = torch.randperm(count, generator=shuffle).to(samples["advantage"].device)
        for start in range(0, count, config.minibatch_size):
            batch = order[start : start + config.minibatch_size]
            minibatch = {key: value[batch] for key, value in samples.items()}
            output = agent(*(minibatch[key] for key in NETWORK_KEYS))
            loss, reported = ppo_loss(output, minibatch, weights, None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
            optimizer.step()
            totals += reported.detach().double().cpu()
            updates += 1
    return dict(zip(LOSS_NAMES, (totals / max(updates, 1)).tolist(), strict=True))


def _episode_metrics(experience: Experience, protocol: Protocol) -> dict[str, Any]:
    outcomes = experience.outcomes
    episodes = max(outcomes.count, 1)
    metrics: dict[str, Any] = {
        "episodes": outcomes.count,
        "verifier_accuracy": outcomes.verifier_accuracy(),
        "episode_length": (
            float(outcomes.rounds.float().mean()) if outcomes.count else math.nan
        ),
        "timeout_rate": float((outcomes.decision < 0).float().sum()) / episodes,
    }
    for index, name in enumerate(protocol.agents):
        metrics[f"reward_{name}"] = float(outcomes.returns[:, index].sum()) / episodes
    return metrics
