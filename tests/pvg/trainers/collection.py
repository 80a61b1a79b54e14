"""A small collection of experience shared by the update tests."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import torch

from pvg_pipeline.pvg.protocols import Rewards, build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import build_agents
from pvg_pipeline.pvg.scenarios.graph_isomorphism.environment import (
    GraphIsomorphismEnv,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import MultiAgentPolicy
from pvg_pipeline.pvg.trainers import ppo
from pvg_pipeline.pvg.trainers.rollouts import collect
from tests.pvg.trainers.test_training import SMALL, _easy_pairs

#: (agents, experience, advantages, returns)
Collection = tuple[dict[str, torch.nn.Module], Any, torch.Tensor, torch.Tensor]

CONFIG = ppo.PPOConfig(num_envs=24, steps_per_iteration=6, epochs=3, minibatch_size=16)


def make_collection(prime_table: dict) -> Collection:
    """Agents (eval mode), 6 steps of 24 environments, advantages and returns."""
    pairs = _easy_pairs(prime_table, 200, 3)
    protocol = build_protocol("pvg", max_message_rounds=6)
    torch.manual_seed(0)
    agents = build_agents(protocol, SMALL, SMALL, 8)
    for agent in agents.values():
        agent.eval()
    env = GraphIsomorphismEnv(pairs, protocol, Rewards(), CONFIG.num_envs, seed=0)
    with torch.no_grad():
        experience = collect(env, MultiAgentPolicy(agents, protocol), 6, CONFIG.gamma)
        advantages, returns = ppo.compute_advantages(experience, CONFIG)
    return agents, experience, advantages, returns


def on_device(device: torch.device, collection: Collection) -> Collection:
    """``collection`` with copies of its agents and tensors on ``device``."""
    agents, experience, advantages, returns = collection
    agents = {n: copy.deepcopy(a).to(device) for n, a in agents.items()}
    experience = replace(
        experience,
        data=experience.data.to(device),
        reward=experience.reward.to(device),
        done=experience.done.to(device),
        final_observation=experience.final_observation.to(device),
        bootstrap_value=experience.bootstrap_value.to(device),
    )
    return agents, experience, advantages.to(device), returns.to(device)
