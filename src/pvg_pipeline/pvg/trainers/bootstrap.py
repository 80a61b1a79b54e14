"""Bootstrap values at the end of a collection, each from the agent's own turn.

A collection stops mid-episode. GAE needs, for every agent whose last action's
segment runs into that cut, an estimate of the agent's value at the final state.
The final state is usually some *other* agent's turn, and an agent's value head is
trained only on the states where it acts: evaluated anywhere else its output is
meaningless. So the estimate is taken from the agent's own next turn instead: the
game is played on from the final state with the current policy (a lookahead that
is not kept: the next collection continues from the final state itself) until each
agent acts or the episode ends, and

``bootstrap_i = sum_k gamma^k r_i[T + k] + gamma^K V_i(s[T + K])``

where ``K`` is the first lookahead step at which agent ``i`` acts (no value term if
the episode ends first). An agent that acts at the final state itself gets its own
value there (``K = 0``). This is an n-step estimate of the agent's value at the
final state under the behaviour policy.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from tensordict import TensorDict, TensorDictBase
from torch import Tensor

from pvg_pipeline.pvg.protocols import Protocol, ProtocolTensors, Rewards
from pvg_pipeline.pvg.scenarios.graph_isomorphism.game import OBSERVATION_KEYS, step


def own_turn_bootstrap(
    policy: Callable[[TensorDictBase], TensorDictBase],
    state: TensorDict,
    game: tuple[Protocol, ProtocolTensors, Rewards],
    gamma: float,
) -> Float[Tensor, "batch agent"]:
    """Every agent's value at ``state``, estimated from its own next turn.

    Parameters
    ----------
    policy
        The acting policy; it writes ``node``, ``decision`` and ``value`` (the
        acting agents' values, ``(batch, agent)``) into the observation it gets.
    state
        The full game state after a collection's last step (no episode finished).
    game
        The protocol, its tensors and the reward constants.
    gamma
        Discount per environment step.
    """
    protocol = game[0]
    batch, agents = state["active"].shape
    estimate = torch.zeros(batch, agents, device=state["round"].device)
    pending = torch.ones(batch, agents, dtype=torch.bool, device=estimate.device)
    discount = torch.ones(batch, 1, device=estimate.device)
    # The lookahead ends within max_rounds steps: every episode times out by then.
    for _ in range(protocol.max_rounds + 1):
        acted = policy(state.select(*OBSERVATION_KEYS))
        reached = pending & state["active"]
        estimate = torch.where(reached, estimate + discount * acted["value"], estimate)
        pending &= ~reached
        if not bool(pending.any()):
            break
        state, reward, done = step(state, acted["node"], acted["decision"], *game)
        estimate = torch.where(pending, estimate + discount * reward, estimate)
        pending &= ~done[:, None]
        discount = discount * gamma
    return estimate
