"""Keeping freed memory: no fresh pages for memory that is freed and allocated again."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from pvg_pipeline.pvg.allocator import retain_freed_memory

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="glibc malloc settings",
)

# Rounds of a training step's pattern: several blocks of 1-2 MB allocated, written
# and freed. Prints whether the setting is on and the page faults of 10 rounds after
# a warm-up. In a fresh process, so that the test process's allocator is not used.
_PROBE = """
import ctypes, resource
from pvg_pipeline.pvg.allocator import retain_freed_memory
print(retain_freed_memory())
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
sizes = [(1 << 20) + i * 37 * 4096 for i in range(8)]
def step():
    blocks = [libc.malloc(size) for size in sizes]
    for block, size in zip(blocks, sizes):
        ctypes.memset(block, 1, size)
    for block in blocks:
        libc.free(block)
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(**env: str) -> tuple[bool, int]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    applied, faults = result.stdout.split()
    return applied == "True", int(faults)


def test_freed_memory_is_reused_without_page_faults() -> None:
    pages = 10 * sum((1 << 20) + i * 37 * 4096 for i in range(8)) // 4096
    applied, faults = _probe(PVG_RETAIN_FREED_MEMORY="1")
    assert applied
    assert faults < pages // 100
    # glibc's defaults give memory back between steps: (nearly) every page faults.
    applied, faults = _probe(PVG_RETAIN_FREED_MEMORY="0")
    assert not applied
    assert faults > pages // 2


def test_retaining_is_on_by_default_and_idempotent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PVG_RETAIN_FREED_MEMORY", raising=False)
    assert retain_freed_memory()
    assert retain_freed_memory()
