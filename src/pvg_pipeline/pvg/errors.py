"""Failures a user can fix, as opposed to bugs.

A :class:`RunError` is reported as one line naming the file or setting at fault and
the fix; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RunError(RuntimeError):
    """A known failure during a run, described completely by its message."""


class ResumeError(RunError, ValueError):
    """A checkpoint that cannot be resumed with the run's settings."""


class MissingCheckpointError(RunError, FileNotFoundError):
    """``trainer.resume`` asked for a checkpoint that does not exist."""
