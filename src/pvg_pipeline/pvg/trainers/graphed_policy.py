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

from tensordict import TensorDict, TensorDictBase
from torch import Tensor

from pvg_pipeline.pvg.scenarios.graph_isomorphism.game import OBSERVATION_KEYS
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import MultiAgentPolicy
from pvg_pipeline.pvg.trainers.captured import CapturedCall

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
        self._act = CapturedCall(self._actions, "the acting step")

    def __call__(self, observation: TensorDictBase) -> TensorDictBase:
        """Write the action keys into ``observation`` (fresh tensors) and return it."""
        actions = self._act(*(observation[key] for key in OBSERVATION_KEYS))
        for key, value in zip(ACTION_KEYS, actions, strict=True):
            observation[key] = value
        return observation

    def _actions(self, *observation: Tensor) -> tuple[Tensor, ...]:
        inputs = TensorDict(
            dict(zip(OBSERVATION_KEYS, observation, strict=True)),
            batch_size=observation[0].shape[:1],
        )
        acted = self.policy(inputs)
        return tuple(acted[key] for key in ACTION_KEYS)

    @property
    def graphed(self) -> bool:
        """Whether the acting step runs as a captured graph."""
        return self._act.graphed
