"""Shared helpers of the benchmark scripts: results as JSON, baseline ratios."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch


def parser(description: str) -> argparse.ArgumentParser:
    """Argument parser with the options every benchmark accepts."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    result.add_argument("--env", default="gi_ppo", help="Kedro environment to read")
    result.add_argument("--output", type=Path, help="write the result JSON here")
    result.add_argument("--baseline", type=Path, help="earlier JSON to compare with")
    result.add_argument(
        "--bundle",
        type=Path,
        help="settings and data written by make_bundle.py (instead of --env)",
    )
    return result


def paper_setup(
    args: argparse.Namespace, num_pairs: int, test_pairs: int = 0
) -> SimpleNamespace:
    """Settings of ``--env`` (or of ``--bundle``), data, the protocol and fresh agents.

    Returns a namespace with ``ppo`` (the ``trainer.ppo`` block as a dict),
    ``rewards``, ``seed``, ``device``, ``pairs``, ``test_pairs`` (when asked for),
    ``protocol``, ``agents`` (with the fused CPU kernels plugged in where they
    apply, as in the train pipeline; ``eager_loss`` is their PPO loss) (initialised from ``--seed`` if the script has that
    option and it is given, else from the configured seed). With ``--bundle`` everything comes from a file
    written by ``make_bundle.py``, so that a machine without Kedro, pydantic or
    primesieve (such as a bare GPU machine) can run the benchmark.
    """
    from pvg_pipeline.accelerate import accelerate
    from pvg_pipeline.pvg.allocator import retain_freed_memory
    from pvg_pipeline.pvg.device import resolve_device
    from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import build_agents

    settings = (
        torch.load(args.bundle, weights_only=False)
        if getattr(args, "bundle", None)
        else bundle_settings(args.env, num_pairs, test_pairs)
    )
    device = resolve_device(args.device)
    if device.type == "cpu":
        retain_freed_memory()  # as train_ppo does
    # The seed sets the initial weights too, as in the train pipeline.
    seed = settings["seed"] if getattr(args, "seed", None) is None else args.seed
    torch.manual_seed(seed)
    agents = build_agents(
        settings["protocol"],
        settings["prover"],
        settings["verifier"],
        settings["padded_nodes"],
        settings["shared_body"],
    )
    for agent in agents.values():
        agent.to(device).eval()
    # As the train pipeline does: the fused CPU kernels where they apply.
    acceleration = accelerate(agents, device, settings["ppo"].get("value_loss", "mse"))
    pairs = {k: v[:num_pairs] for k, v in settings["pairs"].items()}
    return SimpleNamespace(
        env=settings["env"],
        ppo=settings["ppo"],
        rewards=settings["rewards"],
        seed=seed,
        device=device,
        pairs=pairs,
        test_pairs=settings.get("test_pairs"),
        protocol=settings["protocol"],
        agents=agents,
        eager_loss=acceleration.eager_loss,
    )


def bundle_settings(env: str, num_pairs: int, test_pairs: int = 0) -> dict[str, Any]:
    """Resolved settings of Kedro environment ``env`` and freshly generated pairs."""
    from pvg_pipeline.config import load_parameters
    from pvg_pipeline.params import ProjectParameters, parse_parameters
    from pvg_pipeline.pvg.graphs.generation import generate_graph_pairs
    from pvg_pipeline.pvg.graphs.primes import first_primes

    params = parse_parameters(ProjectParameters, load_parameters(env))
    data = params.data_generation
    primes = first_primes(data.hash_size)
    spec = replace(data.generation_spec(data.train), num_pairs=num_pairs)
    settings: dict[str, Any] = {
        "env": env,
        "ppo": params.trainer.ppo.model_dump(),
        "rewards": params.rewards.build(),
        "seed": params.seed,
        "protocol": params.protocol.build(),
        "prover": params.agents.prover.spec(),
        "verifier": params.agents.verifier.spec(),
        "padded_nodes": data.padded_nodes,
        "shared_body": params.agents.shared_body,
        "pairs": generate_graph_pairs(spec, primes, progress=False),
    }
    if test_pairs:
        test_spec = replace(data.generation_spec(data.test), num_pairs=test_pairs)
        settings["test_pairs"] = generate_graph_pairs(test_spec, primes, progress=False)
    return settings


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


def add_alternate_option(options: argparse.ArgumentParser) -> None:
    """``--alternate VAR``: also time with ``VAR=0`` (e.g. a fused kernel off),
    interleaved with the default in one process, so that the drift of a shared
    machine's speed hits both alike; those figures are prefixed ``VAR_off_``.
    ``VAR1+VAR2`` sets several variables to ``0`` together; ``VAR1,VAR2`` times
    each off in turn (three variants), which saves a process start per switch."""
    options.add_argument(
        "--alternate",
        metavar="VAR",
        help="also time with environment variable VAR=0 (VAR1+VAR2: several "
        "together; VAR1,VAR2: each in turn), interleaved in one process "
        "(figures prefixed VAR_off_)",
    )


def _alternate_groups(args: argparse.Namespace) -> list[str]:
    return [g for g in (args.alternate or "").split(",") if g]


def variants(args: argparse.Namespace) -> list[str]:
    """Figure-name prefixes of the variants to time: ``""`` (as configured) and,
    for each group of ``--alternate VAR1,VAR2+VAR3``, ``"VAR1_off_"``,
    ``"VAR2+VAR3_off_"`` (those variables ``0``)."""
    return [""] + [f"{group}_off_" for group in _alternate_groups(args)]


def select_variant(args: argparse.Namespace, variant: str) -> None:
    """Set the environment for ``variant`` (see :func:`variants`): the switched
    variables keep the values they had when the benchmark started, except those
    of ``variant``'s group, which are ``0``."""
    groups = _alternate_groups(args)
    outer = args.__dict__.setdefault(
        "_outer_environment",
        {n: os.environ.get(n) for g in groups for n in g.split("+")},
    )
    for name, value in outer.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if variant:
        for name in variant.removesuffix("_off_").split("+"):
            os.environ[name] = "0"
