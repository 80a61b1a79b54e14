"""Benchmark: rollout frames/s, only-acting-agent vs every-agent-every-step.

Usage::

    .venv/bin/python benchmarks/rollout.py [--env gi_ppo] [--device cpu]
        [--batch-size 256] [--steps 64] [--baseline benchmarks/results/....json]
        [--alternate PVG_FUSED_CPU_GIN]

Paper-scale agents (prover 5 GIN layers, verifier 2, 1 transformer layer, d_gnn 16)
play protocol ``pvg`` with 8 rounds on a batch of games; both modes are measured in
the same run on the same data and seeds, and their ratio is printed, once through
TorchRL's ``env.rollout`` and once through the trainer's lean collector.
``--alternate VAR`` also times every measurement with ``VAR=0``, interleaved.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from _common import (
    add_alternate_option,
    paper_setup,
    parser,
    peak_memory,
    report,
    select_variant,
    variants,
)

from pvg_pipeline.pvg.scenarios.graph_isomorphism.environment import (
    GraphIsomorphismEnv,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import MultiAgentPolicy
from pvg_pipeline.pvg.trainers.rollouts import collect


def _torchrl(env: GraphIsomorphismEnv, policy: MultiAgentPolicy, steps: int) -> None:
    env.rollout(steps, policy, break_when_any_done=False)


def _collector(env: GraphIsomorphismEnv, policy: MultiAgentPolicy, steps: int) -> None:
    collect(
        env, policy, steps, gamma=0.95
    )  # (includes the end-of-collection bootstrap)


RUNNERS: dict[str, Callable] = {"": _torchrl, "collector_": _collector}


def main() -> None:
    """Run the benchmark."""
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--batch-size", type=int, default=256)
    options.add_argument("--steps", type=int, default=64)
    options.add_argument("--repeats", type=int, default=3)
    add_alternate_option(options)
    args = options.parse_args()
    setup = paper_setup(args, num_pairs=1_000)
    figures: dict[str, float | int | str] = {
        "protocol": setup.protocol.name,
        "batch_size": args.batch_size,
        "max_rounds": setup.protocol.max_rounds,
    }
    names = variants(args)
    for runner_prefix, runner in RUNNERS.items():
        for only_active in (True, False):
            mode = "acting_only" if only_active else "all_agents"
            best = dict.fromkeys(names, float("inf"))
            for _ in range(args.repeats):
                for variant in names:  # interleaved: the host's drift hits both
                    select_variant(args, variant)
                    seconds = _time(setup, runner, only_active, args)
                    best[variant] = min(best[variant], seconds)
            for variant, seconds in best.items():
                figures[f"{variant}{runner_prefix}{mode}_frames_per_second"] = (
                    args.batch_size * args.steps / seconds
                )
        for variant in names:
            prefix = f"{variant}{runner_prefix}"
            figures[f"{prefix}speedup_acting_only"] = (
                figures[f"{prefix}acting_only_frames_per_second"]
                / figures[f"{prefix}all_agents_frames_per_second"]
            )
    figures.update(peak_memory(setup.device))
    report("rollout", figures, args)


def _time(setup, runner: Callable, only_active: bool, args) -> float:
    env = GraphIsomorphismEnv(
        setup.pairs,
        setup.protocol,
        setup.rewards,
        args.batch_size,
        seed=0,
        device=setup.device,
    )
    policy = MultiAgentPolicy(setup.agents, setup.protocol, only_active=only_active)
    torch.manual_seed(0)
    with torch.no_grad():
        runner(env, policy, 4)  # warm-up
        if setup.device.type == "cuda":
            torch.cuda.synchronize(setup.device)
        start = time.perf_counter()
        runner(env, policy, args.steps)
        if setup.device.type == "cuda":
            torch.cuda.synchronize(setup.device)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
