"""Run a trainer end to end: build agents, checkpoint store, train, export."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from pvg_pipeline.pvg.errors import MissingCheckpointError, ResumeError
from pvg_pipeline.pvg.protocols import Protocol, Rewards
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import (
    AgentSpec,
    build_agents,
    export_agents,
)
from pvg_pipeline.pvg.trainers.checkpoints import CheckpointStore
from pvg_pipeline.pvg.trainers.ppo import PPOConfig, train_ppo
from pvg_pipeline.pvg.trainers.solo_agent import SoloAgentConfig, train_solo_agents

#: Plugs accelerations into the agents for a device and returns what it did: an
#: object with ``eager_loss`` and ``record`` (as
#: :func:`pvg_pipeline.accelerate.accelerate`, which the train pipeline passes).
Accelerator = Callable[[dict[str, torch.nn.Module], torch.device, str], Any]


def run_training(
    trainer: str,
    config: PPOConfig | SoloAgentConfig,
    protocol: Protocol,
    rewards: Rewards,
    prover: AgentSpec,
    verifier: AgentSpec,
    shared_body: bool,
    train_pairs: Mapping[str, Any],
    test_pairs: Mapping[str, Any],
    seed: int,
    device: torch.device,
    checkpoint_root: str | Path,
    resume: bool | str = False,
    on_iteration: Callable[[dict[str, float]], None] | None = None,
    accelerator: Accelerator | None = None,
) -> tuple[dict[str, Any], list[dict[str, float]], dict[str, Any]]:
    """Train and return (exported agents, history rows, run information).

    ``resume`` is ``False``, ``True`` (the newest run under ``checkpoint_root``) or
    a run folder name. ``accelerator`` plugs accelerations into the agents; what
    it did is the run information's ``acceleration``.
    """
    max_nodes = int(train_pairs["adjacency"].shape[-1])
    torch.manual_seed(seed)
    agents = build_agents(
        protocol, prover, verifier, max_nodes, shared_body, trainer == "solo_agent"
    )
    info: dict[str, Any] = {"trainer": trainer, "max_nodes": max_nodes}
    eager_loss = None
    if accelerator is not None:
        value_loss = getattr(config, "value_loss", "mse")
        acceleration = accelerator(agents, device, value_loss)
        eager_loss = acceleration.eager_loss
        info["acceleration"] = acceleration.record
    if trainer == "solo_agent":
        history = train_solo_agents(
            agents, train_pairs, test_pairs, config, seed, device, on_iteration
        )
    else:
        fingerprint = {
            "protocol": asdict(protocol),
            "rewards": asdict(rewards),
            "agents": {"prover": asdict(prover), "verifier": asdict(verifier)},
            # Neither the budget nor how often the run evaluates changes a result.
            "trainer": {
                k: v
                for k, v in asdict(config).items()
                if k not in ("iterations", "eval_interval")
            },
            "seed": seed,
            "max_nodes": max_nodes,
            "train_pairs": int(train_pairs["sizes"].shape[0]),
        }
        store, state = _checkpoints(Path(checkpoint_root), resume, fingerprint)
        info["checkpoint_dir"] = str(store.directory)
        info["resumed_from_iteration"] = state.iteration if state else 0
        # What the resumed run changed, and which files it had to set aside.
        info["resumed_with_changes"] = store.adjusted
        info["unreadable_checkpoints"] = store.unreadable
        history = train_ppo(
            agents,
            protocol,
            rewards,
            train_pairs,
            config,
            seed,
            device,
            checkpoints=store,
            resume=state,
            on_iteration=on_iteration,
            evaluation_pairs=test_pairs,
            eager_loss=eager_loss,
            run_record=info,
        )
    specs = {name: verifier if name == "verifier" else prover for name in agents}
    exported = export_agents(
        {n: a.cpu() for n, a in agents.items()},
        specs,
        {
            "trainer": trainer,
            "protocol": asdict(protocol),
            "max_nodes": max_nodes,
            "seed": seed,
            "training_history": history,
        },
    )
    return exported, history, info


def _checkpoints(
    root: Path, resume: bool | str, fingerprint: dict[str, Any]
) -> tuple[CheckpointStore, Any]:
    if not resume:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H.%M.%S.%fZ")
        return CheckpointStore(root / stamp, fingerprint), None
    if isinstance(resume, str):
        directory = root / resume
    else:
        runs = sorted(p for p in root.glob("*") if CheckpointStore(p, {}).iterations())
        if not runs:
            raise MissingCheckpointError(
                f"trainer.resume is true but no checkpoint exists under {root}; "
                "start a run without resume first"
            )
        directory = runs[-1]
    store = CheckpointStore(directory, fingerprint)
    try:
        state = store.latest()
    except ValueError as error:
        # Never restart silently: the folder's checkpoints are someone's results.
        raise ResumeError(
            f"{error}. Restore the parameters it was made with to continue it, or "
            f"move {directory} away to train from scratch"
        ) from error
    if state is None:
        unreadable = (
            f" (unreadable, set aside: {', '.join(store.unreadable)})"
            if store.unreadable
            else ""
        )
        raise MissingCheckpointError(
            f"no readable checkpoint in {directory} to resume from{unreadable}"
        )
    return store, state
