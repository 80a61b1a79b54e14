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


def verifier_can_decide(
    max_message_rounds: int, min_message_rounds: int, verifier_first: bool
) -> bool:
    """Whether an alternating protocol gives the verifier a turn that counts."""
    return any(
        (r % 2 == 0) == verifier_first
        for r in range(min_message_rounds, max_message_rounds)
    )
