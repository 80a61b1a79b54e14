"""Running a kernel test on one and on two intra-op threads: the fused CPU kernels'
results must not depend on the thread count (runs are reproducible)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def assert_same_on_one_and_two_threads(compute: Callable[[], Any]) -> None:
    """``compute()`` returns a tensor or a (nested) sequence of tensors; they must
    be bit for bit the same with one and with two threads."""
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            results.append(compute())
    finally:
        torch.set_num_threads(threads)
    _assert_equal(*results)


def _assert_equal(one: Any, two: Any) -> None:
    if isinstance(one, torch.Tensor):
        assert torch.equal(one, two)
        return
    assert len(one) == len(two)
    for first, second in zip(one, two, strict=True):
        _assert_equal(first, second)
