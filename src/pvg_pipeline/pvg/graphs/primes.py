"""The prime table used to hash Weisfeiler–Lehman neighbourhood multisets."""

from __future__ import annotations

import numpy as np
import primesieve
import torch
from jaxtyping import Int64
from torch import Tensor

# Width of each sieving window: ~550 k primes per window keeps the transient Python
# list small (tens of MB) instead of materialising 16.7 M Python ints at once.
_WINDOW = 10_000_000


def first_primes(count: int) -> Int64[Tensor, "count"]:
    """Return the first ``count`` primes as an ``int64`` tensor.

    Parameters
    ----------
    count
        How many primes to return; must be positive.

    Returns
    -------
    Tensor
        ``[2, 3, 5, ...]`` of length ``count``.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    chunks: list[np.ndarray] = []
    found = 0
    start = 0
    while found < count:
        window = np.asarray(primesieve.primes(start, start + _WINDOW), dtype=np.int64)
        chunks.append(window[: count - found])
        found += len(chunks[-1])
        start += _WINDOW + 1
    return torch.from_numpy(np.concatenate(chunks))
