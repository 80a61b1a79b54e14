"""Comparing a fused kernel's named gradients with PyTorch's."""

from __future__ import annotations

import torch
from torch import Tensor


def assert_same_gradients(
    fused: dict[str, Tensor], reference: dict[str, Tensor]
) -> None:
    """The same gradients are present, and each agrees to 1e-4 (rtol) / 1e-5 (atol)."""
    assert fused.keys() == reference.keys()
    for name, grad in reference.items():
        torch.testing.assert_close(fused[name], grad, rtol=1e-4, atol=1e-5, msg=name)
