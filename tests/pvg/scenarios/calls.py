"""Counting the calls of a module's function in a test (is a fused kernel used?)."""

from __future__ import annotations

from types import ModuleType

import pytest


def record_calls(
    monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str
) -> list[int]:
    """Wrap ``module.name`` for the test; the returned list grows by one per call."""
    calls: list[int] = []
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *args: calls.append(1) or original(*args))
    return calls
