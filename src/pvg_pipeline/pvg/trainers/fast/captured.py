"""A function of fixed-shape tensors replayed from a CUDA graph.

On a GPU the trainer's small steps (acting, the advantages) are a few hundred
kernels of a few microseconds each, so launching them one by one from Python
costs more than running them. :class:`CapturedCall` records such a function once,
on static copies of its inputs, and then replays the recording.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


class CapturedCall:
    """Call ``function`` through a CUDA graph captured at the first call.

    Parameters
    ----------
    function
        Takes tensors of the same shapes at every call, returns a tuple of tensors
        and synchronises nothing with the host (a graph cannot hold that).
    what
        Named in the warning when capturing fails; the call then stays eager
        (slower, same results). Calls on CPU tensors are eager too.

    Every call returns fresh tensors (clones of the graph's outputs), so a result
    stays valid after the next replay.
    """

    def __init__(self, function: Callable[..., tuple[Tensor, ...]], what: str) -> None:
        self.function = function
        self.what = what
        self._graph: torch.cuda.CUDAGraph | None = None
        self._inputs: tuple[Tensor, ...] = ()
        self._outputs: tuple[Tensor, ...] = ()
        self._eager = False

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """``function(*inputs)``, replayed from the graph once captured."""
        if self._graph is None and not self._eager:
            if not all(value.is_cuda for value in inputs):
                self._eager = True  # CPU tensors: nothing to capture
            else:
                self._capture(inputs)
        if self._graph is None:
            return self.function(*inputs)
        for static, value in zip(self._inputs, inputs, strict=True):
            static.copy_(value)
        self._graph.replay()
        return tuple(output.clone() for output in self._outputs)

    @property
    def graphed(self) -> bool:
        """Whether calls replay a captured graph."""
        return self._graph is not None

    def _capture(self, inputs: tuple[Tensor, ...]) -> None:
        """Capture on static copies of ``inputs``; on failure stay eager."""
        self._inputs = tuple(value.clone() for value in inputs)
        captured = capture_graph(lambda: self.function(*self._inputs), self.what)
        if captured is None:
            self._eager = True
            return
        self._graph, outputs = captured
        self._outputs = tuple(outputs)


def capture_graph(
    run: Callable[[], T],
    what: str,
    stream: torch.cuda.Stream | None = None,
    after_warm_up: Callable[[], None] | None = None,
) -> tuple[torch.cuda.CUDAGraph, T] | None:
    """Capture ``run()`` as a CUDA graph: the graph and what the captured call
    returned, or ``None`` (with a warning naming ``what``) when it cannot be
    captured.

    ``run`` is first called three times on a side stream (warm-up: lazy
    initialisations, allocator pools; a sampling function's random-number stream
    moves on), then ``after_warm_up`` (e.g. undoing the warm-up's effects), then
    once under capture on ``stream`` (``None``: PyTorch's shared capture stream).
    """
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                run()
        torch.cuda.current_stream().wait_stream(side)
        if after_warm_up is not None:
            after_warm_up()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            result = run()
    except RuntimeError as error:
        warnings.warn(
            f"capturing {what} as a CUDA graph failed ({error}); running it eagerly",
            stacklevel=3,
        )
        torch.cuda.synchronize()
        return None
    return graph, result
