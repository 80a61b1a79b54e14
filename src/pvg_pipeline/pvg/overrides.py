"""Environment-variable overrides of how a run computes, for benchmarks and debugging.

Each switch is on unless its variable is set to ``0``. None changes what is
computed, only how (each path is tested equal to the plain one); a run records the
switches that were off in its ``training_run`` (``acceleration.switched_off``).
``PVG_DEBUG`` asks for tracebacks. This is the one module that reads them.
"""

from __future__ import annotations

import os

#: Switch -> what turning it off does.
SWITCHES = {
    "PVG_FUSED_CPU_KERNELS": "every fused CPU kernel off (plain PyTorch)",
    "PVG_FUSED_CPU_GIN": "the fused GIN layer off",
    "PVG_FUSED_CPU_ATTENTION": "the fused attention off",
    "PVG_FUSED_CPU_TRANSFORMER": "the fused transformer layer off",
    "PVG_FUSED_CPU_TOKENS": "the fused transformer-input tokens off",
    "PVG_FUSED_CPU_HEADS": "the fused heads off",
    "PVG_FUSED_CPU_LOSS": "the fused PPO loss off",
    "PVG_RETAIN_FREED_MEMORY": "glibc's malloc gives freed memory back (CPU training)",
    "PVG_CUDA_STREAMS": "the agents' captured steps replay one after the other",
    "PVG_LEAN_STEP": "the captured step with autograd's backward pass",
    "PVG_GRAPHED_GAME_STEP": "the game step runs eagerly after the acting graph",
}


#: Set (to anything but empty): a failed run prints its whole traceback instead of
#: one line.
DEBUG = "PVG_DEBUG"


def debugging() -> bool:
    """Whether ``PVG_DEBUG`` asks for tracebacks."""
    return bool(os.environ.get(DEBUG))


def enabled(switch: str) -> bool:
    """Whether ``switch`` (a key of :data:`SWITCHES`) is on."""
    if switch not in SWITCHES:
        raise KeyError(f"unknown switch {switch!r}; known: {', '.join(SWITCHES)}")
    return os.environ.get(switch, "1") != "0"


def switched_off() -> list[str]:
    """The switches set to ``0`` in this process."""
    return [switch for switch in SWITCHES if not enabled(switch)]
