"""An agent's parameters and gradients as views of one flat buffer each, so that
gradient clipping and Adam are a few operations on one tensor instead of a walk
over ~60 small ones."""

from __future__ import annotations

import torch
from torch import nn


class FlatParameters:
    """Re-point every parameter of ``module`` (and its gradient) into one buffer.

    After construction ``parameter`` is a single leaf whose data and ``.grad`` hold
    all of the module's parameters and gradients; autograd accumulates into the
    views in place, and an optimiser over ``[parameter]`` updates the module.
    """

    def __init__(self, module: nn.Module) -> None:
        params = list(module.parameters())
        if not params:
            raise ValueError("module has no parameters to optimise")
        reference = params[0]
        total = sum(p.numel() for p in params)
        data = torch.empty(total, dtype=reference.dtype, device=reference.device)
        grad = torch.zeros_like(data)
        offset = 0
        for p in params:
            size = p.numel()
            data[offset : offset + size].copy_(p.detach().reshape(-1))
            p.data = data[offset : offset + size].view_as(p)
            p.grad = grad[offset : offset + size].view_as(p)
            offset += size
        self.module = module
        self.parameter = nn.Parameter(data)
        self.parameter.grad = grad

    def release(self) -> None:
        """Give every parameter its own storage again and drop the gradients."""
        for p in self.module.parameters():
            p.data = p.data.clone()
            p.grad = None


def flattenable(agents: dict[str, nn.Module]) -> bool:
    """Whether the agents share no parameter (a shared body cannot be flattened
    into two buffers at once)."""
    seen: set[int] = set()
    for agent in agents.values():
        ids = {id(p) for p in agent.parameters()}
        if ids & seen:
            return False
        seen |= ids
    return True
