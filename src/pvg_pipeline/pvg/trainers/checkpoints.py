"""Training checkpoints: everything needed to resume bit-identically.

A checkpoint holds the iteration, every agent's weights, every optimiser's state,
the random-number generator states (global torch, environment, minibatch
shuffling), the environment's dataset sampler position, and the metrics history.
Files are written once (exclusive create, via a temporary file) and never replaced.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pvg_pipeline.pvg.scenarios.graph_isomorphism.environment import (
    GraphIsomorphismEnv,
)

_NAME = re.compile(r"^iteration_(\d{7})\.pt$")


@dataclass
class TrainingState:
    """A snapshot of a training run between two iterations."""

    iteration: int
    agents: dict[str, dict[str, Any]]
    optimizers: dict[str, dict[str, Any]]
    rng: dict[str, torch.Tensor]
    sampler: dict[str, Any]
    history: list[dict[str, float]]
    fingerprint: dict[str, Any]

    @classmethod
    def capture(
        cls,
        iteration: int,
        agents: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        env: GraphIsomorphismEnv,
        shuffle: torch.Generator,
        history: list[dict[str, float]],
        fingerprint: dict[str, Any] | None = None,
    ) -> TrainingState:
        """Snapshot the live objects of a run."""
        return cls(
            iteration=iteration,
            agents={name: agent.state_dict() for name, agent in agents.items()},
            optimizers={name: opt.state_dict() for name, opt in optimizers.items()},
            rng={
                "torch": torch.get_rng_state(),
                "shuffle": shuffle.get_state(),
                **(
                    {"cuda": torch.cuda.get_rng_state_all()}
                    if torch.cuda.is_available()
                    else {}
                ),
            },
            sampler=env.sampling_state(),
            history=[dict(row) for row in history],
            fingerprint=dict(fingerprint or {}),
        )

    def restore(
        self,
        agents: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        env: GraphIsomorphismEnv,
        shuffle: torch.Generator,
    ) -> tuple[int, list[dict[str, float]]]:
        """Load the snapshot into live objects; return iteration and history."""
        if set(self.agents) != set(agents):
            raise ValueError(
                f"checkpoint has agents {sorted(self.agents)} but the run has "
                f"{sorted(agents)}: was it made with another protocol?"
            )
        for name, agent in agents.items():
            agent.load_state_dict(self.agents[name])
        for name, optimizer in optimizers.items():
            try:
                optimizer.load_state_dict(self.optimizers[name])
            except ValueError as error:
                # e.g. per-parameter Adam state (older checkpoints, or a shared
                # body) against the trainer's one flat buffer per agent.
                raise ValueError(
                    f"the optimiser state of agent {name!r} in this checkpoint does "
                    f"not fit the run's optimiser ({error}); it was written by "
                    "another version or agent layout: start a new run"
                ) from error
        torch.set_rng_state(self.rng["torch"])
        if "cuda" in self.rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.rng["cuda"])
        shuffle.set_state(self.rng["shuffle"])
        env.load_sampling_state(self.sampler)
        return self.iteration, [dict(row) for row in self.history]

    def to_dict(self) -> dict[str, Any]:
        """Plain containers of tensors, loadable with ``weights_only=True``."""
        return dict(self.__dict__)


class CheckpointStore:
    """``iteration_XXXXXXX.pt`` files of one run in one directory.

    Parameters
    ----------
    directory
        The run's checkpoint folder (created on first save).
    fingerprint
        What must match to resume (protocol, agents, trainer settings, seed);
        stored in every checkpoint and compared by :meth:`latest`.
    """

    def __init__(self, directory: str | Path, fingerprint: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.fingerprint = fingerprint

    def save(self, state: TrainingState) -> Path:
        """Write a checkpoint; an existing file for the iteration is an error."""
        state.fingerprint = self.fingerprint
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"iteration_{state.iteration:07d}.pt"
        partial = path.with_suffix(".partial")
        torch.save(state.to_dict(), partial)
        # os.link fails if the target exists: a checkpoint is never replaced.
        try:
            os.link(partial, path)
        finally:
            partial.unlink()
        return path

    def iterations(self) -> list[int]:
        """Iterations with a checkpoint, ascending."""
        if not self.directory.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def load(self, iteration: int) -> TrainingState:
        """The checkpoint of ``iteration``, unchecked."""
        path = self.directory / f"iteration_{iteration:07d}.pt"
        return TrainingState(**torch.load(path, weights_only=True))

    def latest(self) -> TrainingState | None:
        """The newest checkpoint, checked against this run's fingerprint."""
        iterations = self.iterations()
        if not iterations:
            return None
        state = self.load(iterations[-1])
        differing = sorted(
            key
            for key in set(state.fingerprint) | set(self.fingerprint)
            if state.fingerprint.get(key) != self.fingerprint.get(key)
        )
        if differing:
            details = [
                f"{key}: {state.fingerprint.get(key)!r} then, {self.fingerprint.get(key)!r} now"
                for key in differing
                if len(repr(state.fingerprint.get(key))) < 60
            ]
            raise ValueError(
                f"cannot resume from {self.directory} (iteration {state.iteration}): "
                f"it was made with a different {', '.join(differing)}"
                + (f" ({'; '.join(details)})" if details else "")
            )
        return state
