"""Optional accelerations, plugged into the plain model and trainer from outside.

The agents (:mod:`pvg_pipeline.pvg.scenarios.graph_isomorphism.agents`) and the
PPO trainer are plain PyTorch and import nothing from here. :func:`accelerate`
is the one place that plugs the fused CPU kernels (:mod:`.cpu`) into a run's
agents and says what it did, for the run's record (``training_run``).

Each kernel computes what the plain code computes, to float rounding (tested
against it). The environment variables ``PVG_FUSED_CPU_KERNELS=0`` (all) and
``PVG_FUSED_CPU_{GIN,ATTENTION,TRANSFORMER,TOKENS,HEADS,LOSS}=0`` (one) switch them
off, for benchmarks and debugging (:mod:`pvg_pipeline.pvg.overrides`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pvg_pipeline.pvg import overrides
from pvg_pipeline.pvg.trainers.ppo_loss import EagerLoss

logger = logging.getLogger(__name__)

ALL_KERNELS_SWITCH = "PVG_FUSED_CPU_KERNELS"


@dataclass(frozen=True)
class Acceleration:
    """What :func:`accelerate` plugged in.

    Attributes
    ----------
    eager_loss
        The trainer's eager minibatch loss, or ``None`` for its own.
    record
        For ``training_run``: ``cpu_kernels`` (``on``, or ``off`` and why),
        ``switched_off`` (the overrides of :mod:`pvg_pipeline.pvg.overrides` set
        to ``0``) and ``not_covered`` (settings a kernel does not implement: those
        parts run in PyTorch).
    """

    eager_loss: EagerLoss | None = None
    record: dict[str, Any] = field(default_factory=dict)


def accelerate(
    agents: Mapping[str, nn.Module], device: torch.device, value_loss: str = "mse"
) -> Acceleration:
    """Plug the fused CPU kernels into ``agents`` (in place) for a run on
    ``device``; return the trainer's loss and the record of what is used.

    On other devices nothing changes (CUDA has its own paths in the trainer).
    Settings that a kernel does not implement are announced once, as a warning.
    """
    switched_off = overrides.switched_off()
    if device.type != "cpu":
        off = f"off: the run is on {device}"
    elif not overrides.enabled(ALL_KERNELS_SWITCH):
        off = f"off: {ALL_KERNELS_SWITCH}=0"
    else:
        off = None
    if off is not None:
        return Acceleration(record={"cpu_kernels": off, "switched_off": switched_off})
    from pvg_pipeline.accelerate.cpu import kernels, layers, loss

    if kernels.load_extension() is None:
        return Acceleration(
            record={
                "cpu_kernels": "off: they could not be built",
                "switched_off": switched_off,
            }
        )
    for agent in agents.values():
        layers.accelerate_agent(agent)
    uncovered = [
        note for name, agent in agents.items() for note in _uncovered(name, agent)
    ]
    if value_loss != "mse":
        uncovered.append(
            f"value_loss {value_loss}: the loss kernel covers the squared error only"
        )
    if uncovered:
        logger.warning(
            "Fused CPU kernels do not cover these settings (those parts run in "
            "PyTorch, slower): %s",
            "; ".join(uncovered),
        )
    return Acceleration(
        eager_loss=loss.eager_ppo_loss,
        record={
            "cpu_kernels": "on",
            "switched_off": switched_off,
            "not_covered": uncovered,
        },
    )


def _uncovered(name: str, agent: nn.Module) -> list[str]:
    """The agent's settings that some kernel does not implement."""
    arch = getattr(getattr(agent, "body", None), "arch", None)
    if arch is None:  # not a network (a random prover)
        return []
    notes = []
    if arch.activation != "relu":
        notes.append(
            f"{name}: activation {arch.activation}: the GIN, transformer and heads "
            "kernels cover relu only"
        )
    if arch.node_selector_layers != 1 or arch.round_in_heads:
        notes.append(
            f"{name}: the heads kernel covers a one-layer node selector without "
            "the round in the heads"
        )
    return notes
