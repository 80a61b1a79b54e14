"""Training checkpoints: everything needed to resume bit-identically.

A checkpoint holds the iteration, every agent's weights, every optimiser's state,
the random-number generator states (global torch, environment, minibatch
shuffling), the environment's dataset sampler position, and the metrics history.
Files are written once (exclusive create, via a temporary file) and never replaced.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pvg_pipeline.pvg.errors import ResumeError
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
        learning_rate: float | None = None,
    ) -> tuple[int, list[dict[str, float]]]:
        """Load the snapshot into live objects; return iteration and history.

        ``learning_rate`` replaces the one saved with the optimisers (a resumed
        run may lower it, see :data:`ADJUSTABLE`).
        """
        if set(self.agents) != set(agents):
            raise ResumeError(
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
                raise ResumeError(
                    f"the optimiser state of agent {name!r} in this checkpoint does "
                    f"not fit the run's optimiser ({error}); it was written by "
                    "another version or agent layout: start a new run"
                ) from error
            if learning_rate is not None:
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate
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
        #: Settings that differ from the resumed checkpoint's: key -> [then, now].
        self.adjusted: dict[str, list[Any]] = {}
        #: Unreadable checkpoints set aside by :meth:`latest`.
        self.unreadable: list[str] = []

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
        """The newest readable checkpoint, checked against this run's fingerprint.

        An unreadable file (truncated by a full disk or a killed copy, corrupt) is
        renamed ``<name>.unreadable`` (kept, never deleted, and out of the way of
        the iteration's new checkpoint) with a warning, and the previous
        checkpoint is used. Settings in :data:`ADJUSTABLE` may differ from the
        checkpoint's; :attr:`adjusted` lists those that do.
        """
        for iteration in reversed(self.iterations()):
            path = self.directory / f"iteration_{iteration:07d}.pt"
            try:
                state = self.load(iteration)
            except Exception as error:  # noqa: BLE001 - any unreadable file
                kept = path.with_name(path.name + ".unreadable")
                os.replace(path, kept)
                self.unreadable.append(str(kept))
                warnings.warn(
                    f"checkpoint {path} cannot be read ({type(error).__name__}); "
                    f"kept as {kept.name}, resuming from the previous checkpoint",
                    stacklevel=2,
                )
                continue
            self._check(state)
            return state
        return None

    def _check(self, state: TrainingState) -> None:
        before, now = flatten(state.fingerprint), flatten(self.fingerprint)
        differing = sorted(
            key
            for key in set(before) | set(now)
            if before.get(key) != now.get(key)
            and not (key not in before and _as_before(key, now.get(key)))
        )
        refused = [key for key in differing if key not in ADJUSTABLE]
        if refused:
            details = "; ".join(
                f"{key} was {_short(before.get(key))}, now {_short(now.get(key))}"
                for key in refused
            )
            raise ResumeError(
                f"cannot resume from {self.directory} (iteration {state.iteration}): "
                f"it was made with other settings: {details}"
            )
        self.adjusted = {key: [before.get(key), now.get(key)] for key in differing}


#: Settings a run may change when it resumes: they steer the next updates but do
#: not change what the saved weights, optimiser moments or running games mean.
ADJUSTABLE = frozenset(
    f"trainer.{key}"
    for key in (
        "learning_rate",
        "entropy_coefficient",
        "clip_epsilon",
        "max_grad_norm",
        "checkpoint_interval",
        "cuda_graphs",
        "compile",
    )
)


#: Settings newer than some checkpoints, with the value that means what those
#: checkpoints did (``None``: any value; it matters only with another setting on).
AS_BEFORE: dict[str, Any] = {
    "agents.prover.architecture.observation_normalisation": False,
    "agents.verifier.architecture.observation_normalisation": False,
    "trainer.observation_normalisation_steps": None,
    "agents.prover.architecture.answer_in_other_graph": False,
    "agents.verifier.architecture.answer_in_other_graph": False,
}


def _as_before(key: str, value: Any) -> bool:
    """Whether a setting the checkpoint does not know has its old meaning."""
    return key in AS_BEFORE and AS_BEFORE[key] in (None, value)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and scalars are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat |= flatten(value, f"{path}.")
        else:
            flat[path] = value
    return flat


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
