"""Two provers and a verifier: ``debate``, ``mnip``, ``merlin_arthur``.

``prover_0`` argues for *reject* (paid when the verifier rejects), ``prover_1`` for
*accept* (paid when it accepts). The verifier's message is written to every channel
it writes to, so each prover sees the question the verifier asked.
"""

from __future__ import annotations

from pvg_pipeline.pvg.protocol_names import first_decision_round
from pvg_pipeline.pvg.protocols.base import VERIFIER, Protocol, alternating_schedule

_AGENTS = ("prover_0", "prover_1", VERIFIER)


def debate_protocol(
    max_message_rounds: int = 8,
    min_message_rounds: int = 0,
    verifier_first: bool = True,
    decisions_from: str = "min_rounds_minus_one",
) -> Protocol:
    """Both provers answer at the same turns; every agent sees both channels."""
    visibility = ((True, True), (True, True), (True, True))
    return _alternating(
        "debate",
        visibility,
        max_message_rounds,
        first_decision_round(min_message_rounds, decisions_from),
        verifier_first,
    )


def mnip_protocol(
    max_message_rounds: int = 8,
    min_message_rounds: int = 0,
    verifier_first: bool = True,
    decisions_from: str = "min_rounds_minus_one",
) -> Protocol:
    """Like debate, but each prover talks to the verifier on a private channel."""
    visibility = ((True, False), (False, True), (True, True))
    return _alternating(
        "mnip",
        visibility,
        max_message_rounds,
        first_decision_round(min_message_rounds, decisions_from),
        verifier_first,
    )


def _alternating(
    name: str,
    visibility: tuple[tuple[bool, ...], ...],
    max_message_rounds: int,
    min_decision_round: int,
    verifier_first: bool,
) -> Protocol:
    """Verifier, then both provers at once, on one channel per prover."""
    return Protocol(
        name=name,
        agents=_AGENTS,
        channels=("prover_0", "prover_1"),
        visibility=visibility,
        writes=((True, False), (False, True), (True, True)),
        schedule=alternating_schedule(
            max_message_rounds,
            verifier_first,
            (False, False, True),
            (True, True, False),
        ),
        min_decision_round=min_decision_round,
        accept_prover=1,
        reject_prover=0,
    )


def merlin_arthur_protocol() -> Protocol:
    """One prover, drawn per episode, sends one message; then the verifier decides.

    Both provers write to one channel, so the verifier cannot tell which spoke.
    """
    return Protocol(
        name="merlin_arthur",
        agents=_AGENTS,
        channels=("main",),
        visibility=((True,), (True,), (True,)),
        writes=((True,), (True,), (False,)),
        schedule=((True, True, False), (False, False, True)),
        min_decision_round=1,
        accept_prover=1,
        reject_prover=0,
        one_prover_per_episode=True,
    )
