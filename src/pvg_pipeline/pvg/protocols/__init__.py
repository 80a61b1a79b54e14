"""Interaction protocols and their registry (name -> factory)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvg_pipeline.pvg.protocol_names import MULTI_ROUND, PROTOCOL_NAMES
from pvg_pipeline.pvg.protocols.base import (
    VERIFIER,
    Decision,
    Protocol,
    ProtocolTensors,
    Rewards,
)
from pvg_pipeline.pvg.protocols.single_prover import (
    adp_protocol,
    pvg_protocol,
    solo_verifier_protocol,
)
from pvg_pipeline.pvg.protocols.two_provers import (
    debate_protocol,
    merlin_arthur_protocol,
    mnip_protocol,
)

#: Protocol name -> factory. Factories of fixed-length protocols take no arguments.
PROTOCOLS: dict[str, Callable[..., Protocol]] = {
    "pvg": pvg_protocol,
    "nip": pvg_protocol,
    "adp": adp_protocol,
    "debate": debate_protocol,
    "mnip": mnip_protocol,
    "merlin_arthur": merlin_arthur_protocol,
    "solo_verifier": solo_verifier_protocol,
}


def build_protocol(name: str, **rounds: Any) -> Protocol:
    """Build a protocol by name; round parameters apply to multi-round protocols."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; valid: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name](**rounds) if name in MULTI_ROUND else PROTOCOLS[name]()


__all__ = [
    "MULTI_ROUND",
    "PROTOCOLS",
    "PROTOCOL_NAMES",
    "VERIFIER",
    "Decision",
    "Protocol",
    "ProtocolTensors",
    "Rewards",
    "build_protocol",
]
