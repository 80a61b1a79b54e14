"""A function of fixed-shape tensors replayed from a CUDA graph.

On a GPU the trainer's small steps (acting, the advantages) are a few hundred
kernels of a few microseconds each, so launching them one by one from Python
costs more than running them. :class:`CapturedCall` records such a function once,
on static copies of its inputs, and then replays the recording.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor


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
        self._failed = False

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """``function(*inputs)``, replayed from the graph once captured."""
        if self._graph is None and not self._failed:
            if not all(value.is_cuda for value in inputs):
                self._failed = True  # nothing to capture: stays eager
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
        """Warm up on a side stream, then capture; on failure warn and stay eager.

        The warm-up runs the function three times on the static inputs: only the
        random-number stream (if it samples) moves on.
        """
        self._inputs = tuple(value.clone() for value in inputs)
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    self.function(*self._inputs)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outputs = self.function(*self._inputs)
        except RuntimeError as error:
            warnings.warn(
                f"capturing {self.what} as a CUDA graph failed ({error}); "
                "running it eagerly",
                stacklevel=3,
            )
            torch.cuda.synchronize()
            self._failed = True
            return
        self._outputs = tuple(outputs)
        self._graph = graph
