"""Shared helpers of the benchmark scripts: results as JSON, baseline ratios."""

from __future__ import annotations

import argparse
import json
import platform
import resource
from pathlib import Path
from typing import Any

import torch


def parser(description: str) -> argparse.ArgumentParser:
    """Argument parser with the options every benchmark accepts."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    result.add_argument("--env", default="gi_ppo", help="Kedro environment to read")
    result.add_argument("--output", type=Path, help="write the result JSON here")
    result.add_argument("--baseline", type=Path, help="earlier JSON to compare with")
    return result


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process (and of the GPU when used), in MiB."""
    figures = {
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    }
    if device.type == "cuda":
        figures["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return figures


def report(name: str, figures: dict[str, Any], args: argparse.Namespace) -> None:
    """Print figures, compare with ``--baseline`` and write ``--output``."""
    result = {
        "benchmark": name,
        "figures": figures,
        "machine": {
            "platform": platform.platform(),
            "cpus": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": args.device,
        },
    }
    baseline = json.loads(args.baseline.read_text())["figures"] if args.baseline else {}
    for key, value in figures.items():
        line = (
            f"{key:>32}: {value:,.3f}"
            if isinstance(value, float)
            else f"{key:>32}: {value}"
        )
        if isinstance(baseline.get(key), int | float) and baseline[key]:
            line += (
                f"   (x{value / baseline[key]:.2f} vs baseline {baseline[key]:,.3f})"
            )
        print(line)
    output = args.output or Path(__file__).parent / "results" / f"{name}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    print(f"result written to {output}")
