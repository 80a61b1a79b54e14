"""Batched mechanics of one graph-isomorphism game step, as pure tensor functions.

The state is a :class:`~tensordict.TensorDict` with batch size ``(batch,)``:

========================  ==========================================================
``adjacency``             ``(batch, 2, node, node)`` bool, both graphs, zero-padded
``node_mask``             ``(batch, 2, node)`` bool, real nodes
``message_history``       ``(batch, round, channel, 2, node)`` float one-hot messages
``round``                 ``(batch,)`` int64, the round about to be played
``active``                ``(batch, agent)`` bool, whose turn it is
``decision_allowed``      ``(batch,)`` bool, a verifier accept/reject counts now
``label``                 ``(batch,)`` bool, isomorphic? (state only, never observed)
``participants``          ``(batch, agent)`` bool, agents taking part in the episode
``prover_choice``         ``(batch,)`` int64, Merlin-Arthur's prover of the episode
``decision``              ``(batch,)`` int64, final decision (-1 while undecided)
``pair_index``            ``(batch,)`` int64, row of the dataset being played
========================  ==========================================================
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int64
from tensordict import TensorDict
from torch import Tensor

from pvg_pipeline.pvg.protocols import Decision, Protocol, ProtocolTensors, Rewards

#: Keys of the state that agents may observe. The label is deliberately absent.
OBSERVATION_KEYS = (
    "adjacency",
    "node_mask",
    "message_history",
    "round",
    "active",
    "decision_allowed",
)


def new_episodes(
    adjacency: Bool[Tensor, "batch 2 node node"],
    sizes: Int64[Tensor, "batch"],
    label: Bool[Tensor, "batch"],
    pair_index: Int64[Tensor, "batch"],
    prover_choice: Int64[Tensor, "batch"],
    protocol: Protocol,
    tables: ProtocolTensors,
) -> TensorDict:
    """Fresh states at round 0 for the given pairs."""
    batch, _, max_nodes, _ = adjacency.shape
    device = adjacency.device
    node_mask = torch.arange(max_nodes, device=device) < sizes[:, None]
    participants = protocol.participants(prover_choice)
    round_number = torch.zeros(batch, dtype=torch.int64, device=device)
    history = torch.zeros(
        batch, protocol.max_rounds, len(protocol.channels), 2, max_nodes, device=device
    )
    state = TensorDict(
        {
            "adjacency": adjacency,
            "node_mask": node_mask[:, None, :].expand(-1, 2, -1).clone(),
            "message_history": history,
            "round": round_number,
            "label": label,
            "participants": participants,
            "prover_choice": prover_choice,
            "decision": torch.full_like(round_number, -1),
            "pair_index": pair_index,
        },
        batch_size=[batch],
        device=device,
    )
    return _with_turn(state, protocol, tables)


def step(
    state: TensorDict,
    node: Int64[Tensor, "batch agent"],
    decision: Int64[Tensor, "batch"],
    protocol: Protocol,
    tables: ProtocolTensors,
    rewards: Rewards,
) -> tuple[TensorDict, Float[Tensor, "batch agent"], Bool[Tensor, "batch"]]:
    """Play one round in every environment.

    Parameters
    ----------
    state
        Current states (see module docstring); not modified.
    node
        Each agent's message: index ``graph * node + node_in_graph`` in ``[0, 2N)``.
        Ignored for agents that are not active.
    decision
        The verifier's :class:`Decision`; counts only where ``decision_allowed``.

    Returns
    -------
    tuple
        Next state, per-agent rewards and whether each episode ended.
    """
    batch = state.batch_size[0]
    round_number = state["round"]
    # The tensors' device, not ``state.device``: a TensorDict built without one
    # (as inside a captured graph) has ``None``, which would put ``rows`` on the CPU.
    rows = torch.arange(batch, device=round_number.device)
    active = state["active"]
    max_nodes = state["adjacency"].shape[-1]
    # Messages: each active agent writes its one-hot node to its channels. (A
    # comparison, not one_hot(), which reads the indices' range back to the host:
    # a synchronisation per step on a GPU.)
    positions = torch.arange(2 * max_nodes, device=node.device)
    one_hot = ((node[..., None] == positions) & active[..., None]).float()
    per_channel = torch.einsum("ban,ac->bcn", one_hot, tables.writes).clamp(max=1.0)
    history = state["message_history"].clone()
    history[rows, round_number.clamp(max=protocol.max_rounds - 1)] = torch.maximum(
        history[rows, round_number.clamp(max=protocol.max_rounds - 1)],
        per_channel.view(batch, -1, 2, max_nodes),
    )
    can_decide = state["decision_allowed"]
    effective = torch.where(can_decide, decision, int(Decision.CONTINUE))
    decided = effective != Decision.CONTINUE
    timeout = ~decided & (round_number + 1 >= protocol.max_rounds)
    reward = protocol.rewards(
        effective,
        can_decide,
        active[:, protocol.verifier_index],
        timeout,
        state["label"],
        state["participants"],
        rewards,
    )
    next_state = state.clone(recurse=False)
    next_state["message_history"] = history
    next_state["round"] = round_number + 1
    next_state["decision"] = torch.where(decided, effective, state["decision"])
    return _with_turn(next_state, protocol, tables), reward, decided | timeout


def _with_turn(
    state: TensorDict, protocol: Protocol, tables: ProtocolTensors
) -> TensorDict:
    """Set ``active`` and ``decision_allowed`` for the state's round."""
    active = protocol.active_agents(state["round"], state["participants"], tables)
    state["active"] = active
    state["decision_allowed"] = active[:, protocol.verifier_index] & (
        state["round"] >= protocol.min_decision_round
    )
    return state
