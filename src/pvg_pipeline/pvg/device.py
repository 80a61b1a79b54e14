"""Choosing the torch device from the ``device`` parameter."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a usable device.

    ``auto`` picks CUDA when available. Asking for CUDA on a machine without it is
    an error rather than a silent fallback to a 100x slower run.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device '{name}' was requested but CUDA is not available; "
            "use device: auto or cpu"
        )
    return device
