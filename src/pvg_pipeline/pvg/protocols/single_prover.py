"""One prover and one verifier: ``pvg`` (alias ``nip``), ``adp``, ``solo_verifier``."""

from __future__ import annotations

from pvg_pipeline.pvg.protocol_names import first_decision_round
from pvg_pipeline.pvg.protocols.base import VERIFIER, Protocol, alternating_schedule

_AGENTS = ("prover", VERIFIER)


def pvg_protocol(
    max_message_rounds: int = 8,
    min_message_rounds: int = 0,
    verifier_first: bool = True,
    decisions_from: str = "min_rounds_minus_one",
) -> Protocol:
    """Prover and verifier alternate on one shared channel (neural interactive proof).

    The verifier may accept or reject at its turns from round
    ``min_message_rounds - 1`` (``decisions_from="min_rounds"``: from round
    ``min_message_rounds``); the prover is paid when the verifier accepts.
    """
    return Protocol(
        name="pvg",
        agents=_AGENTS,
        channels=("main",),
        visibility=((True,), (True,)),
        writes=((True,), (True,)),
        schedule=alternating_schedule(
            max_message_rounds, verifier_first, (False, True), (True, False)
        ),
        min_decision_round=first_decision_round(min_message_rounds, decisions_from),
        accept_prover=0,
    )


def adp_protocol() -> Protocol:
    """Two rounds: the prover sends one message, then the verifier decides."""
    return Protocol(
        name="adp",
        agents=_AGENTS,
        channels=("main",),
        visibility=((True,), (True,)),
        writes=((True,), (True,)),
        schedule=((True, False), (False, True)),
        min_decision_round=1,
        accept_prover=0,
    )


def solo_verifier_protocol() -> Protocol:
    """The verifier alone decides in one round (baseline without a prover)."""
    return Protocol(
        name="solo_verifier",
        agents=(VERIFIER,),
        channels=("main",),
        visibility=((True,),),
        writes=((True,),),
        schedule=((True,),),
        min_decision_round=0,
    )
