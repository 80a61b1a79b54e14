"""Per-iteration metrics from training nodes to whoever listens (the W&B hook).

Nodes stay pure: they call :func:`publish`, and a Kedro hook subscribes a listener
for the duration of a run.
"""

from __future__ import annotations

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
