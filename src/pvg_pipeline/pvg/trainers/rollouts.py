"""Collecting a batch of experience from the environment with a multi-agent policy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from tensordict import TensorDict, TensorDictBase
from torch import Tensor

from pvg_pipeline.pvg.protocols import Decision
from pvg_pipeline.pvg.scenarios.graph_isomorphism.environment import (
    GraphIsomorphismEnv,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.game import OBSERVATION_KEYS, step
from pvg_pipeline.pvg.trainers.bootstrap import own_turn_bootstrap

_STORED = (*OBSERVATION_KEYS, "node", "decision", "log_prob", "value")


@dataclass
class EpisodeOutcomes:
    """Outcomes of the episodes that ended during a collection."""

    decision: Tensor  # (episodes,) Decision value, -1 for a timeout
    label: Tensor  # (episodes,) bool
    rounds: Tensor  # (episodes,) rounds played
    returns: Tensor  # (episodes, agent) summed rewards

    @property
    def count(self) -> int:
        """Number of finished episodes."""
        return int(self.label.shape[0])

    def verifier_accuracy(self) -> float:
        """Fraction of episodes decided correctly (timeouts count as wrong)."""
        correct = (self.decision == Decision.ACCEPT) == self.label
        correct &= self.decision >= 0
        return float(correct.float().mean()) if self.count else float("nan")


@dataclass
class Experience:
    """``steps x batch`` transitions plus bootstrap information."""

    data: TensorDict  # batch size (time, batch): observations, actions, log_prob, value
    reward: Float[Tensor, "time batch agent"]
    done: Bool[Tensor, "time batch"]
    final_observation: TensorDict
    #: Each agent's value at the final state, from its own next turn
    #: (:func:`~pvg_pipeline.pvg.trainers.bootstrap.own_turn_bootstrap`).
    bootstrap_value: Float[Tensor, "batch agent"]
    outcomes: EpisodeOutcomes


def collect(
    env: GraphIsomorphismEnv,
    policy: Callable[[TensorDictBase], TensorDictBase],
    steps: int,
    gamma: float,
) -> Experience:
    """Play ``steps`` rounds in every environment, continuing the episodes that
    the previous collection left unfinished (fresh ones at the first call).

    Drives the game functions directly (no TorchRL step/reset bookkeeping); the
    transitions are identical to ``env.rollout`` with the same seeds (tested).
    Finished episodes are replaced in place, and the outcome of every episode that
    ended is reported (its return counted from the episode's start, also when that
    was in an earlier collection). ``gamma`` discounts the bootstrap values.
    """
    if env._state is None:
        env.reset()
    state = env.state
    batch, num_agents = state["active"].shape
    episode_return = env.episode_return
    stored, rewards, dones = [], [], []
    # Per-step full tensors, masked once at the end: no host sync inside the loop.
    ended: dict[str, list[Tensor]] = {
        "decision": [],
        "label": [],
        "rounds": [],
        "returns": [],
    }
    # A graphed policy (CUDA) plays the game step inside its graph too.
    play = getattr(policy, "game_player", lambda: None)()
    game = (env.protocol, env.tables, env.reward_constants)
    for _ in range(steps):
        if play is not None:
            observation, state, reward, done = play(state, *game)
        else:
            observation = policy(state.select(*OBSERVATION_KEYS))
            state, reward, done = step(
                state, observation["node"], observation["decision"], *game
            )
        stored.append(observation.select(*_STORED))
        rewards.append(reward)
        dones.append(done)
        episode_return = episode_return + reward
        ended["decision"].append(state["decision"])
        ended["label"].append(state["label"])
        ended["rounds"].append(state["round"])
        ended["returns"].append(episode_return)
        episode_return = torch.where(done[:, None], 0.0, episode_return)
        state = env.replace_finished(state, done)
    env._state = state
    env.episode_return = episode_return
    done_steps = torch.stack(dones)
    return Experience(
        data=torch.stack(stored),
        reward=torch.stack(rewards),
        done=done_steps,
        final_observation=state.select(*OBSERVATION_KEYS),
        bootstrap_value=own_turn_bootstrap(policy, state, game, gamma),
        outcomes=EpisodeOutcomes(
            **{k: torch.stack(v)[done_steps] for k, v in ended.items()}
        ),
    )
