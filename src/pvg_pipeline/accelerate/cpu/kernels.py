"""Building and loading the fused CPU kernels (one C++ extension).

The agents' layers are tiny (11-node graphs, 16-wide features, 4 heads of 4
dimensions), so on the CPU PyTorch spends most of their time on per-operation
overhead and on passes over small intermediates. Fused kernels do that work in
one pass each, in cache:

- masked multi-head attention (``attention.cpp``, :mod:`.attention`);
- the GIN layer (``gin.cpp``, :mod:`.gin`);
- the whole transformer layer without gradients (``transformer.cpp``) and its
  two halves with gradients (``transformer_training.cpp``), both used by
  :mod:`.transformer`;
- the transformer's tokens from the GIN output (``tokens.cpp``,
  :mod:`.tokens`);
- the node, value and decision heads (``heads.cpp``, :mod:`.heads`);
- the PPO loss and its gradient (``loss.cpp``, :mod:`.loss`).

``kernels.cpp`` binds them. They are compiled together once per virtual
environment with ``torch.utils.cpp_extension`` (``scripts/setup.sh`` does it at
install time; ~1.5 minutes) into ``<venv>/torch_extensions``, with OpenMP so that
they use torch's intra-op threads.

When the build fails (no C++ compiler), one warning says so and the agents use
plain PyTorch: same results to float rounding. Each kernel has an off switch,
an environment variable set to ``0`` (``PVG_FUSED_CPU_ATTENTION``,
``PVG_FUSED_CPU_GIN``, ``PVG_FUSED_CPU_TRANSFORMER``, ``PVG_FUSED_CPU_TOKENS``,
``PVG_FUSED_CPU_HEADS``, ``PVG_FUSED_CPU_LOSS``); ``PVG_FUSED_CPU_KERNELS=0`` turns
them all off.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch

from pvg_pipeline.pvg import overrides

_HERE = Path(__file__).parent
#: Concatenated into one translation unit, bindings last.
SOURCES = (
    "gin.cpp",  # its register-tiled products serve the kernels after it
    "attention.cpp",
    "transformer.cpp",
    "transformer_training.cpp",
    "tokens.cpp",
    "heads.cpp",
    "loss.cpp",
    "kernels.cpp",
)

_ALL_SWITCH = "PVG_FUSED_CPU_KERNELS"
_lock = threading.Lock()
_state: dict[str, ModuleType | None] = {}


def _build_flags() -> tuple[str, list[str]]:
    """Extension name and compiler flags for this CPU's vector instructions."""
    # ``at::parallel_for`` is inline OpenMP: without ``-fopenmp`` it runs serially.
    # The extension links ``libgomp.so.1`` by soname, so it shares the runtime (and
    # the thread settings) that torch has already loaded.
    flags = ["-O3", "-fopenmp"]
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        return "pvg_accelerate_cpu_avx2", [
            *flags,
            "-mavx2",
            "-mfma",
            "-DCPU_CAPABILITY=AVX2",
            "-DCPU_CAPABILITY_AVX2",
        ]
    return "pvg_accelerate_cpu", [*flags, "-DCPU_CAPABILITY=DEFAULT"]


def load_extension(switch: str | None = None) -> ModuleType | None:
    """The compiled kernels (built on first use), or ``None`` when they are
    switched off (``switch`` or ``PVG_FUSED_CPU_KERNELS`` set to ``0``) or cannot
    be built (a warning says why, once)."""
    if not overrides.enabled(_ALL_SWITCH):
        return None
    if switch is not None and not overrides.enabled(switch):
        return None
    with _lock:
        if "module" not in _state:
            _state["module"] = _build()
        return _state["module"]


def loaded(switch: str) -> ModuleType:
    """The compiled kernels, for a caller that has checked that its kernel applies
    (its module's ``fusable``)."""
    extension = load_extension(switch)
    assert extension is not None, f"check fusable() first: {switch} kernel is off"
    return extension


def vector_multiples(switch: str, *sizes: int) -> bool:
    """Whether every size is a multiple of the kernels' vector width (their
    layouts need it). Check :func:`usable` first."""
    lanes = loaded(switch).lanes()
    return all(size % lanes == 0 for size in sizes)


def usable(tensor: torch.Tensor, switch: str) -> bool:
    """Whether a fused kernel may take ``tensor``: CPU float32, outside
    ``torch.compile``, built and not switched off by ``switch``."""
    return (
        tensor.device.type == "cpu"
        and tensor.dtype == torch.float32
        and not torch.compiler.is_compiling()
        and load_extension(switch) is not None
    )


def _build() -> ModuleType | None:
    from torch.utils.cpp_extension import load_inline

    name, flags = _build_flags()
    # In the virtual environment (rebuilt with it); torch's cache dir when the
    # environment is not writable (a system install, the Docker image).
    directory: Path | None = Path(sys.prefix) / "torch_extensions" / name
    if not os.access(sys.prefix, os.W_OK):
        directory = None
    # The virtual environment's ``ninja`` is not on PATH unless it is activated.
    if shutil.which("ninja") is None:
        os.environ["PATH"] = (
            f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        )
    try:
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        # From the source text, not its path: ``load_inline`` keeps one copy in
        # the build folder, so a project copied elsewhere (tests, sweeps) reuses
        # the build instead of recompiling for a new source path.
        return load_inline(
            name,
            cpp_sources=["\n".join((_HERE / s).read_text() for s in SOURCES)],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
            build_directory=None if directory is None else str(directory),
            verbose=False,
        )
    except Exception as error:  # noqa: BLE001 - any build failure means fall back
        warnings.warn(
            f"could not build the fused CPU kernels ({error}); using PyTorch's "
            f"operations (slower on CPU). Set {_ALL_SWITCH}=0 to silence this.",
            stacklevel=3,
        )
        return None
