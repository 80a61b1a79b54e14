"""The agent tests' small dataset, for the accelerator's tests too."""

from tests.pvg.conftest import small_pairs  # noqa: F401
