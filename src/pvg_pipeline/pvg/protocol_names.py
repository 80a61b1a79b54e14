"""Protocol names, importable without torch (parameter validation uses them)."""

from __future__ import annotations

#: Every registered protocol name (``nip`` is an alias of ``pvg``).
PROTOCOL_NAMES = (
    "pvg",
    "nip",
    "adp",
    "debate",
    "mnip",
    "merlin_arthur",
    "solo_verifier",
)

#: Protocols whose length is set by the round parameters; in all of them the
#: verifier acts at even rounds when it goes first and at odd rounds otherwise.
MULTI_ROUND = frozenset({"pvg", "nip", "debate", "mnip"})


#: When the verifier's accept/reject starts to count in a multi-round protocol:
#: from round ``min_message_rounds - 1`` (the reference implementation's rule, the
#: default) or from round ``min_message_rounds`` (one round later).
DECISION_RULES = ("min_rounds_minus_one", "min_rounds")


def first_decision_round(
    min_message_rounds: int, decisions_from: str = "min_rounds_minus_one"
) -> int:
    """The first round (numbered from 0) at which a verifier decision counts."""
    if decisions_from not in DECISION_RULES:
        raise ValueError(
            f"unknown decisions_from {decisions_from!r}; valid: "
            + ", ".join(DECISION_RULES)
        )
    if decisions_from == "min_rounds":
        return min_message_rounds
    return max(min_message_rounds - 1, 0)


def verifier_can_decide(
    max_message_rounds: int,
    min_message_rounds: int,
    verifier_first: bool,
    decisions_from: str = "min_rounds_minus_one",
) -> bool:
    """Whether an alternating protocol gives the verifier a turn that counts."""
    return any(
        (r % 2 == 0) == verifier_first
        for r in range(
            first_decision_round(min_message_rounds, decisions_from),
            max_message_rounds,
        )
    )
