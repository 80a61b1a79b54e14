"""The acting step of a collection captured as one CUDA graph.

Acting runs every agent's network, samples and scores the actions: a few hundred
small kernels per environment step, so on a GPU the step is bound by kernel
launches. :class:`GraphedPolicy` records the whole
:class:`~pvg_pipeline.pvg.scenarios.graph_isomorphism.policy.MultiAgentPolicy`
call once and replays it. A graph needs fixed shapes, so the policy runs every
agent on every environment (``only_active=False``: the same distribution of
actions, inactive outputs discarded) instead of selecting the acting rows, which
needs a host synchronisation.
"""

from __future__ import annotations

import warnings

import torch
from tensordict import TensorDictBase
from torch import Tensor

from pvg_pipeline.pvg.scenarios.graph_isomorphism.game import OBSERVATION_KEYS
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import MultiAgentPolicy

ACTION_KEYS = ("node", "decision", "log_prob", "value")


class GraphedPolicy:
    """Call ``policy`` through a CUDA graph captured at the first call.

    Parameters
    ----------
    policy
        Must run every agent on every row (``only_active=False``).
    """

    def __init__(self, policy: MultiAgentPolicy) -> None:
        if policy.only_active:
            raise ValueError("a graphed policy needs only_active=False (fixed shapes)")
        self.policy = policy
        self._graph: torch.cuda.CUDAGraph | None = None
        self._inputs: TensorDictBase | None = None
        self._outputs: dict[str, Tensor] = {}
        self._failed = False

    def __call__(self, observation: TensorDictBase) -> TensorDictBase:
        """Write the action keys into ``observation`` (fresh tensors) and return it."""
        if self._graph is None and not self._failed:
            self._capture(observation)
        if self._graph is None:
            return self.policy(observation)
        assert self._inputs is not None
        for key in OBSERVATION_KEYS:
            self._inputs[key].copy_(observation[key])
        self._graph.replay()
        for key in ACTION_KEYS:
            observation[key] = self._outputs[key].clone()
        return observation

    def _capture(self, observation: TensorDictBase) -> None:
        """Warm up on a side stream and capture; on failure warn and stay eager."""
        self._inputs = observation.select(*OBSERVATION_KEYS).clone()
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):  # warm-up: only the random stream moves on
                    self.policy(self._inputs.clone(recurse=False))
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                acted = self.policy(self._inputs.clone(recurse=False))
        except RuntimeError as error:
            warnings.warn(
                f"capturing the acting step as a CUDA graph failed ({error}); "
                "acting eagerly",
                stacklevel=2,
            )
            torch.cuda.synchronize()
            self._failed = True
            return
        self._outputs = {key: acted[key] for key in ACTION_KEYS}
        self._graph = graph

    @property
    def graphed(self) -> bool:
        """Whether the acting step runs as a captured graph."""
        return self._graph is not None
