"""The acting step of a collection captured as one CUDA graph.

Acting runs every agent's network, samples and scores the actions: a few hundred
small kernels per environment step, so on a GPU the step is bound by kernel
launches. :class:`GraphedPolicy` records the whole
:class:`~pvg_pipeline.pvg.scenarios.graph_isomorphism.policy.MultiAgentPolicy`
call once and replays it. A graph needs fixed shapes, so the policy runs every
agent on every environment (``only_active=False``: the same distribution of
actions, inactive outputs discarded) instead of selecting the acting rows, which
needs a host synchronisation. :meth:`GraphedPolicy.play` captures the game step
with the acting step, so that a collection step launches one graph and a few
copies instead of ~60 small eager operations.
"""

from __future__ import annotations

from collections.abc import Callable

from tensordict import TensorDict, TensorDictBase
from torch import Tensor

from pvg_pipeline.pvg import overrides
from pvg_pipeline.pvg.protocols import Protocol, ProtocolTensors, Rewards
from pvg_pipeline.pvg.scenarios.graph_isomorphism.game import OBSERVATION_KEYS, step
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import MultiAgentPolicy
from pvg_pipeline.pvg.trainers.fast.captured import CapturedCall

ACTION_KEYS = ("node", "decision", "log_prob", "value")
#: ``PVG_GRAPHED_GAME_STEP=0``: a collection runs the game step eagerly after the
#: acting graph, e.g. to measure the difference.
GAME_STEP_SWITCH = "PVG_GRAPHED_GAME_STEP"
#: The state a game step reads besides the observation.
_GAME_KEYS = ("label", "participants", "decision")
#: What the captured acting and game step reads.
_PLAY_KEYS = (*OBSERVATION_KEYS, *_GAME_KEYS)
#: The state keys a game step changes (the others keep their tensors).
_CHANGED_KEYS = ("message_history", "round", "decision", "active", "decision_allowed")


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
        self._play: CapturedCall | None = None
        self._game: tuple[Protocol, ProtocolTensors, Rewards] | None = None

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

    def game_player(
        self,
    ) -> Callable[..., tuple[TensorDict, TensorDict, Tensor, Tensor]] | None:
        """:meth:`play`, which the collector calls instead of acting and stepping
        the game itself, unless ``PVG_GRAPHED_GAME_STEP`` is ``0``."""
        return self.play if overrides.enabled(GAME_STEP_SWITCH) else None

    def play(
        self,
        state: TensorDict,
        protocol: Protocol,
        tables: ProtocolTensors,
        rewards: Rewards,
    ) -> tuple[TensorDict, TensorDict, Tensor, Tensor]:
        """Act on ``state``'s observation and play the game step, as one graph:
        the observation with the action keys, then what
        :func:`~pvg_pipeline.pvg.scenarios.graph_isomorphism.game.step` returns
        (next state, rewards, whether each episode ended)."""
        game = (protocol, tables, rewards)
        if self._play is None:
            self._game = game
            self._play = CapturedCall(self._act_and_play, "the acting and game step")
        elif any(a is not b for a, b in zip(self._game or (), game, strict=True)):
            # The graph holds the first game's tables and reward constants.
            raise ValueError("a graphed policy plays one game (protocol, rewards)")
        outputs = self._play(*(state[key] for key in _PLAY_KEYS))
        actions = outputs[: len(ACTION_KEYS)]
        changed = outputs[len(ACTION_KEYS) : -2]
        observation = state.select(*OBSERVATION_KEYS)
        next_state = state.clone(recurse=False)
        for key, value in zip(ACTION_KEYS, actions, strict=True):
            observation[key] = value
        for key, value in zip(_CHANGED_KEYS, changed, strict=True):
            next_state[key] = value
        return observation, next_state, outputs[-2], outputs[-1]

    def _act_and_play(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        assert self._game is not None
        state = TensorDict(
            dict(zip(_PLAY_KEYS, inputs, strict=True)),
            batch_size=inputs[0].shape[:1],
            device=inputs[0].device,
        )
        actions = self._actions(*inputs[: len(OBSERVATION_KEYS)])
        next_state, reward, done = step(state, actions[0], actions[1], *self._game)
        return (
            *actions,
            *(next_state[key] for key in _CHANGED_KEYS),
            reward,
            done,
        )

    @property
    def graphed(self) -> bool:
        """Whether the acting step runs as a captured graph."""
        return self._act.graphed or (self._play is not None and self._play.graphed)


def game_player(
    policy: object,
) -> Callable[..., tuple[TensorDict, TensorDict, Tensor, Tensor]] | None:
    """:meth:`GraphedPolicy.play` of ``policy`` if it is a graphed policy and
    ``PVG_GRAPHED_GAME_STEP`` is not ``0``, else ``None``."""
    if not isinstance(policy, GraphedPolicy):
        return None
    return policy.game_player()
