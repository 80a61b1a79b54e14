"""Per-iteration metrics from training nodes to whoever listens (the W&B hook).

Nodes stay pure: they call :func:`publish`, and a Kedro hook subscribes a listener
for the duration of a run.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Listener = Callable[[dict[str, float]], None]
_listeners: list[Listener] = []


def subscribe(listener: Listener) -> None:
    """Receive every metrics row published from now on."""
    _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    """Stop receiving metrics rows."""
    if listener in _listeners:
        _listeners.remove(listener)


def publish(metrics: dict[str, float]) -> None:
    """Send one metrics row to every listener."""
    for listener in list(_listeners):
        listener(metrics)


#: Metric-name endings that name an agent (``policy_loss_prover``).
_AGENT = re.compile(r"^(?P<metric>.+)_(?P<agent>verifier|prover\d*)$")


def grouped_name(name: str) -> str:
    """The W&B name of a history column: grouped by agent or by split.

    ``policy_loss_prover`` -> ``prover/policy_loss``, ``test_accuracy_wl1`` ->
    ``test/accuracy_wl1``, ``frames_per_second`` -> ``train/frames_per_second``;
    ``iteration`` stays as it is (the x axis).
    """
    if name == "iteration":
        return name
    if name.startswith("test_"):
        return "test/" + name.removeprefix("test_")
    match = _AGENT.match(name)
    if match:
        return f"{match['agent']}/{match['metric']}"
    return "train/" + name


def grouped(metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` under their :func:`grouped_name`."""
    return {grouped_name(name): value for name, value in metrics.items()}
