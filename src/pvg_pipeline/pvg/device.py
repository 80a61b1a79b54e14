"""Choosing the torch device from the ``device`` parameter."""

from __future__ import annotations

import torch

from pvg_pipeline.pvg.errors import RunError


def device_problem(name: str) -> str | None:
    """Why ``device: name`` cannot run on this machine, or ``None`` if it can."""
    if name in ("auto", "cpu"):
        return None
    device = torch.device(name)
    if device.type != "cuda":
        return None
    if not torch.cuda.is_available():
        return "CUDA is not available on this machine; use device: auto or cpu"
    if device.index is not None and device.index >= torch.cuda.device_count():
        return (
            f"this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0 to "
            f"cuda:{torch.cuda.device_count() - 1}); use device: auto or cuda:0"
        )
    return None


def resolve_device(name: str) -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a usable device.

    ``auto`` picks CUDA when available. Asking for CUDA on a machine without it is
    an error rather than a silent fallback to a 100x slower run.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(name)
    if problem:
        raise RunError(f"device '{name}' was requested but {problem}")
    return torch.device(name)
