"""Counting the operations PyTorch runs: on a GPU each one is a kernel launch.

A CUDA graph replays one kernel per operation of the code it captured, and at this
workload's sizes each kernel costs a few microseconds however small its tensors,
so the number of operations of a gradient step is what its replay time follows.
:class:`OperationCounter` counts them on any device, forward, backward and
optimiser alike; views and allocations launch nothing and are not counted.
"""

from __future__ import annotations

import collections
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode

# Allocations and dtype conversions of host scalars: no kernel of their own.
_NOT_KERNELS = frozenset({"empty", "empty_strided", "_to_copy"})


class OperationCounter(TorchDispatchMode):
    """Counts the operations dispatched inside ``with OperationCounter() as c:``,
    by name (``c.counts``) and in all (``c.total``)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        name = func.overloadpacket.__name__
        if not func.is_view and name not in _NOT_KERNELS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        """Operations counted so far."""
        return sum(self.counts.values())
