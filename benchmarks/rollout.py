"""Benchmark: rollout frames/s, only-acting-agent vs every-agent-every-step.

Usage::

    .venv/bin/python benchmarks/rollout.py [--env gi_ppo] [--device cpu]
        [--batch-size 256] [--steps 64] [--baseline benchmarks/results/....json]

Paper-scale agents (prover 5 GIN layers, verifier 2, 1 transformer layer, d_gnn 16)
play protocol ``pvg`` with 8 rounds on a batch of games; both modes are measured in
the same run on the same data and seeds, and their ratio is printed.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch
from _common import parser, peak_memory, report

from pvg_pipeline.config import load_parameters
from pvg_pipeline.params import ProjectParameters, parse_parameters
from pvg_pipeline.pvg.device import resolve_device
from pvg_pipeline.pvg.graphs.generation import generate_graph_pairs
from pvg_pipeline.pvg.graphs.primes import first_primes
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import build_agents
from pvg_pipeline.pvg.scenarios.graph_isomorphism.environment import (
    GraphIsomorphismEnv,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import MultiAgentPolicy
from pvg_pipeline.pvg.trainers.rollouts import collect


def main() -> None:
    """Run the benchmark."""
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--batch-size", type=int, default=256)
    options.add_argument("--steps", type=int, default=64)
    options.add_argument("--repeats", type=int, default=3)
    args = options.parse_args()
    params = parse_parameters(ProjectParameters, load_parameters(args.env))
    device = resolve_device(args.device)
    data = params.data_generation
    spec = replace(data.generation_spec(data.train), num_pairs=1_000)
    pairs = generate_graph_pairs(spec, first_primes(data.hash_size), progress=False)
    protocol = params.protocol.build()
    agents = build_agents(
        protocol,
        params.agents.prover.spec(),
        params.agents.verifier.spec(),
        data.padded_nodes,
        params.agents.shared_body,
    )
    figures: dict[str, float | int | str] = {
        "protocol": protocol.name,
        "batch_size": args.batch_size,
        "max_rounds": protocol.max_rounds,
    }
    for only_active in (True, False):
        mode = "acting_only" if only_active else "all_agents"
        best = float("inf")
        for _ in range(args.repeats):
            best = min(
                best, _time_rollout(pairs, params, agents, device, only_active, args)
            )
        figures[f"{mode}_frames_per_second"] = args.batch_size * args.steps / best
    for only_active in (True, False):
        mode = "acting_only" if only_active else "all_agents"
        best = min(
            _time_collector(pairs, params, agents, device, args, only_active)
            for _ in range(args.repeats)
        )
        figures[f"collector_{mode}_frames_per_second"] = (
            args.batch_size * args.steps / best
        )
    figures["collector_speedup_acting_only"] = (
        figures["collector_acting_only_frames_per_second"]
        / figures["collector_all_agents_frames_per_second"]
    )
    figures["speedup_acting_only"] = (
        figures["acting_only_frames_per_second"]
        / figures["all_agents_frames_per_second"]
    )
    figures.update(peak_memory(device))
    report("rollout", figures, args)


def _time_rollout(pairs, params, agents, device, only_active, args) -> float:
    protocol = params.protocol.build()
    env = GraphIsomorphismEnv(
        pairs, protocol, params.rewards.build(), args.batch_size, seed=0, device=device
    )
    policy = MultiAgentPolicy(agents, protocol, only_active=only_active).to(device)
    torch.manual_seed(0)
    with torch.no_grad():
        env.rollout(4, policy, break_when_any_done=False)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        env.rollout(args.steps, policy, break_when_any_done=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _time_collector(pairs, params, agents, device, args, only_active) -> float:
    """The trainer's lean collection loop (same transitions, no TorchRL bookkeeping)."""
    protocol = params.protocol.build()
    env = GraphIsomorphismEnv(
        pairs, protocol, params.rewards.build(), args.batch_size, seed=0, device=device
    )
    policy = MultiAgentPolicy(agents, protocol, only_active=only_active).to(device)
    torch.manual_seed(0)
    with torch.no_grad():
        collect(env, policy, 4)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        collect(env, policy, args.steps)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
