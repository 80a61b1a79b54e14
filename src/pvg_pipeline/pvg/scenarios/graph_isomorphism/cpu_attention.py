"""Fused masked attention for the agents' tiny heads on the CPU (a C++ extension).

At the agents' sizes (24 tokens, 4 heads of 4 dimensions, a few hundred rows)
``scaled_dot_product_attention`` on the CPU costs ~11 ms forward + backward per
256-row minibatch, a quarter of a PPO gradient step; the fused kernel in
``cpu_attention.cpp`` computes the same attention in ~3.5 ms (see
``docs/performance.md``). It is built once per virtual environment with
``torch.utils.cpp_extension`` (``scripts/setup.sh`` does it at install time; it
takes ~1 minute) into ``<venv>/torch_extensions``.

Used only where it applies (CPU, float32, not inside ``torch.compile``); everywhere
else, and when the build fails (no C++ compiler), the agents use PyTorch's
attention: same results to float rounding. Set ``PVG_FUSED_CPU_ATTENTION=0`` to
turn it off.
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
from jaxtyping import Bool, Float
from torch import Tensor

_SOURCE = Path(__file__).with_suffix(".cpp")
_SWITCH = "PVG_FUSED_CPU_ATTENTION"
_lock = threading.Lock()
_state: dict[str, ModuleType | None] = {}


def _build_flags() -> tuple[str, list[str]]:
    """Extension name and compiler flags for this CPU's vector instructions."""
    flags = ["-O3"]
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        return "pvg_cpu_attention_avx2", [
            *flags,
            "-mavx2",
            "-mfma",
            "-DCPU_CAPABILITY=AVX2",
            "-DCPU_CAPABILITY_AVX2",
        ]
    return "pvg_cpu_attention", [*flags, "-DCPU_CAPABILITY=DEFAULT"]


def load_extension() -> ModuleType | None:
    """The compiled kernel (built on first use), or ``None`` when it is switched
    off or cannot be built (a warning says why, once)."""
    if os.environ.get(_SWITCH, "1") == "0":
        return None
    with _lock:
        if "module" not in _state:
            _state["module"] = _build()
        return _state["module"]


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
            cpp_sources=[_SOURCE.read_text()],
            extra_cflags=flags,
            build_directory=None if directory is None else str(directory),
            verbose=False,
        )
    except Exception as error:  # noqa: BLE001 - any build failure means fall back
        warnings.warn(
            f"could not build the fused CPU attention kernel ({error}); using "
            f"PyTorch's attention (slower on CPU). Set {_SWITCH}=0 to silence this.",
            stacklevel=3,
        )
        return None


def fusable(qkv: Tensor) -> bool:
    """Whether :func:`fused_attention` can compute this attention."""
    return (
        qkv.device.type == "cpu"
        and qkv.dtype == torch.float32
        and not torch.compiler.is_compiling()
        and load_extension() is not None
    )


class _FusedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv: Tensor, bias: Tensor, num_heads: int) -> Tensor:  # type: ignore[override]
        extension = load_extension()
        assert extension is not None
        scale = (qkv.shape[-1] // (3 * num_heads)) ** -0.5
        out, probs = extension.forward(
            qkv.contiguous(), bias, num_heads, scale, ctx.needs_input_grad[0]
        )
        ctx.save_for_backward(qkv, probs)
        ctx.num_heads, ctx.scale = num_heads, scale
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        qkv, probs = ctx.saved_tensors
        extension = load_extension()
        assert extension is not None
        grad = extension.backward(
            grad_out, qkv.contiguous(), probs, ctx.num_heads, ctx.scale
        )
        return grad, None, None


def fused_attention(
    qkv: Float[Tensor, "batch token three_d_model"],
    allowed: Bool[Tensor, "batch 1 token token"],
    num_heads: int,
) -> Float[Tensor, "batch token d_model"]:
    """Multi-head attention where query ``i`` sees key ``j`` iff ``allowed[i, j]``.

    ``qkv`` is the output of the layer's ``Linear(d_model, 3 * d_model)`` (queries,
    keys, values; heads contiguous inside each); the result is the heads'
    outputs concatenated, i.e. ``scaled_dot_product_attention`` followed by the
    usual transpose and reshape. Check :func:`fusable` first.
    """
    extension = load_extension()
    assert extension is not None, "check fusable() before calling fused_attention"
    batch, tokens, _ = qkv.shape
    lanes = extension.lanes()
    padded = -(-tokens // lanes) * lanes
    bias = torch.full((batch, tokens, padded), float("-inf"))
    bias[..., :tokens].masked_fill_(allowed[:, 0], 0.0)
    return _FusedAttention.apply(qkv, bias, num_heads)
