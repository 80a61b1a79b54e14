"""What a protocol is: agents, channels, turn order and reward rules.

A protocol is data, not code paths: the environment asks it which agents act at a
round, which channels each agent writes to and sees, when the verifier's decisions
count, and which prover is paid on accept or reject. New protocols are a factory
function returning a :class:`Protocol` plus one registry line.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch
from jaxtyping import Bool, Float, Int64
from torch import Tensor

VERIFIER = "verifier"


class Decision(IntEnum):
    """The verifier's decision action."""

    REJECT = 0
    ACCEPT = 1
    CONTINUE = 2


@dataclass(frozen=True)
class Rewards:
    """Reward constants; all are parameters."""

    verifier_correct: float = 1.0
    verifier_incorrect: float = -1.0
    verifier_timeout: float = -1.0
    verifier_continue: float = 0.0
    #: ``every_turn``: the continue reward is paid on every verifier turn of an
    #: episode that goes on (the reference implementation's rule);
    #: ``decision_turns``: only on turns where a decision would have counted.
    verifier_continue_turns: str = "every_turn"
    prover_convinced: float = 1.0


@dataclass(frozen=True)
class Protocol:
    """An interaction protocol between provers and a verifier.

    Attributes
    ----------
    name
        Registry name.
    agents
        Agent names; exactly one is ``"verifier"``.
    channels
        Channel names; messages are one-hot per channel x round x node.
    visibility
        ``visibility[a][c]``: agent ``a`` sees channel ``c``.
    writes
        ``writes[a][c]``: agent ``a``'s message is written to channel ``c``.
    schedule
        ``schedule[r][a]``: agent ``a`` may act at round ``r`` (``max_rounds`` rows).
    min_decision_round
        First round at which the verifier's accept/reject counts.
    accept_prover, reject_prover
        Index of the prover paid when the verifier accepts / rejects, if any.
    one_prover_per_episode
        Merlin-Arthur: one prover that may act is drawn uniformly per episode; the
        other neither acts nor is paid in that episode.
    """

    name: str
    agents: tuple[str, ...]
    channels: tuple[str, ...]
    visibility: tuple[tuple[bool, ...], ...]
    writes: tuple[tuple[bool, ...], ...]
    schedule: tuple[tuple[bool, ...], ...]
    min_decision_round: int
    accept_prover: int | None = None
    reject_prover: int | None = None
    one_prover_per_episode: bool = False

    def __post_init__(self) -> None:
        if self.agents.count(VERIFIER) != 1:
            raise ValueError(f"protocol {self.name} needs exactly one verifier")
        shapes = {
            "visibility": (self.visibility, len(self.channels)),
            "writes": (self.writes, len(self.channels)),
        }
        for field, (rows, width) in shapes.items():
            if len(rows) != len(self.agents) or any(len(r) != width for r in rows):
                raise ValueError(f"protocol {self.name}: {field} has the wrong shape")
        if any(len(row) != len(self.agents) for row in self.schedule):
            raise ValueError(f"protocol {self.name}: schedule has the wrong shape")
        verifier_turns = [
            r
            for r, row in enumerate(self.schedule)
            if row[self.verifier_index] and r >= self.min_decision_round
        ]
        if self.min_decision_round < 0 or not verifier_turns:
            raise ValueError(
                f"protocol {self.name}: the verifier never gets a turn at or after "
                f"round {self.min_decision_round} within {self.max_rounds} rounds, "
                "so it could never decide"
            )

    @property
    def max_rounds(self) -> int:
        """Number of rounds before an undecided episode times out."""
        return len(self.schedule)

    @property
    def verifier_index(self) -> int:
        """Position of the verifier in :attr:`agents`."""
        return self.agents.index(VERIFIER)

    @property
    def provers(self) -> tuple[str, ...]:
        """Names of the provers (every agent but the verifier)."""
        return tuple(a for a in self.agents if a != VERIFIER)

    def tensors(self, device: torch.device | str) -> ProtocolTensors:
        """The protocol's tables as tensors on ``device``, for batched stepping."""
        return ProtocolTensors(
            visibility=torch.tensor(self.visibility, device=device),
            writes=torch.tensor(self.writes, dtype=torch.float32, device=device),
            schedule=torch.tensor(self.schedule, device=device),
        )

    def participants(
        self, prover_choice: Int64[Tensor, "batch"]
    ) -> Bool[Tensor, "batch agent"]:
        """Agents that take part in each episode (all but Merlin-Arthur's unchosen)."""
        batch = prover_choice.shape[0]
        everyone = torch.ones(
            batch, len(self.agents), dtype=torch.bool, device=prover_choice.device
        )
        if not self.one_prover_per_episode:
            return everyone
        prover_indices = [i for i, a in enumerate(self.agents) if a != VERIFIER]
        chosen = torch.tensor(prover_indices, device=prover_choice.device)[
            prover_choice
        ]
        is_prover = torch.tensor(
            [a != VERIFIER for a in self.agents], device=prover_choice.device
        )
        agent_index = torch.arange(len(self.agents), device=prover_choice.device)
        return ~is_prover | (agent_index == chosen[:, None])

    def active_agents(
        self,
        round_number: Int64[Tensor, "batch"],
        participants: Bool[Tensor, "batch agent"],
        tables: ProtocolTensors,
    ) -> Bool[Tensor, "batch agent"]:
        """Agents whose turn it is in each environment."""
        clamped = round_number.clamp(max=self.max_rounds - 1)
        playing = (round_number < self.max_rounds)[:, None]
        return tables.schedule[clamped] & participants & playing

    def rewards(
        self,
        decision: Int64[Tensor, "batch"],
        can_decide: Bool[Tensor, "batch"],
        verifier_turn: Bool[Tensor, "batch"],
        timeout: Bool[Tensor, "batch"],
        label: Bool[Tensor, "batch"],
        participants: Bool[Tensor, "batch agent"],
        constants: Rewards,
    ) -> Float[Tensor, "batch agent"]:
        """Per-agent rewards of one step.

        ``decision`` must already be ``CONTINUE`` wherever a decision does not count.
        The continue reward is paid where the episode goes on after a verifier turn
        (or only a turn where a decision counted, by ``verifier_continue_turns``);
        a timeout is paid the timeout penalty only.
        """
        accept = decision == Decision.ACCEPT
        reject = decision == Decision.REJECT
        decided = accept | reject
        correct = decided & (accept == label)
        continuing = (
            can_decide
            if constants.verifier_continue_turns == "decision_turns"
            else verifier_turn
        )
        verifier = (
            correct.float() * constants.verifier_correct
            + (decided & ~correct).float() * constants.verifier_incorrect
            + (continuing & ~decided & ~timeout).float() * constants.verifier_continue
            + timeout.float() * constants.verifier_timeout
        )
        reward = torch.zeros(participants.shape, device=decision.device)
        reward[:, self.verifier_index] = verifier
        if self.accept_prover is not None:
            reward[:, self.accept_prover] += accept.float() * constants.prover_convinced
        if self.reject_prover is not None:
            reward[:, self.reject_prover] += reject.float() * constants.prover_convinced
        return reward * participants


@dataclass(frozen=True)
class ProtocolTensors:
    """Protocol tables as tensors (built once per device)."""

    visibility: Bool[Tensor, "agent channel"]
    writes: Float[Tensor, "agent channel"]
    schedule: Bool[Tensor, "round agent"]


def alternating_schedule(
    max_rounds: int,
    verifier_first: bool,
    verifier: tuple[bool, ...],
    provers: tuple[bool, ...],
) -> tuple[tuple[bool, ...], ...]:
    """Verifier and provers take turns; ``verifier`` / ``provers`` are agent masks."""
    return tuple(
        verifier if (r % 2 == 0) == verifier_first else provers
        for r in range(max_rounds)
    )
