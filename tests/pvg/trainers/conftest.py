"""Fixtures of the trainer tests."""

from __future__ import annotations

import pytest

from tests.pvg.trainers.collection import Collection, make_collection


@pytest.fixture(scope="module")
def collection(prime_table) -> Collection:
    """See :func:`tests.pvg.trainers.collection.make_collection`."""
    return make_collection(prime_table)
