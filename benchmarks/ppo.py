"""Benchmark: one PPO iteration split into collection / advantages / update.

Usage::

    .venv/bin/python benchmarks/ppo.py [--env gi_ppo] [--device cpu] [--iterations 3]
        [--baseline benchmarks/results/baseline_ppo.json] [--alternate VAR]

Uses the environment's protocol, agents and PPO settings (``gi_ppo``: 256 envs x 8
steps = 2 048 frames, 10 epochs, minibatch 256). Prints milliseconds per phase
(median over iterations after one warm-up), training frames/s including updates,
projected hours for the configured number of iterations, and peak memory.

``--alternate VAR`` times iterations alternately with the environment variable
``VAR=0`` and without it, in one process (e.g. ``PVG_FUSED_CPU_GIN``: a kernel off
and on), and reports the second set of figures with the prefix ``VAR_off_``: on a
shared machine whose speed drifts, interleaving is what makes the two comparable.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

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
from pvg_pipeline.pvg.trainers import ppo
from pvg_pipeline.pvg.trainers.rollouts import collect


def main() -> None:
    """Run the benchmark."""
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--iterations", type=int, default=3)
    options.add_argument(
        "--plain",
        action="store_true",
        help="the plain reference update instead of the trainer's fixed-shape one",
    )
    options.add_argument(
        "--no-cuda-graphs", action="store_true", help="eager steps on CUDA"
    )
    options.add_argument("--compile", action="store_true", help="torch.compile loss")
    add_alternate_option(options)
    args = options.parse_args()
    setup = paper_setup(args, num_pairs=2_000)
    agents, protocol, device = setup.agents, setup.protocol, setup.device
    config = ppo.PPOConfig(**setup.ppo)
    config = replace(config, cuda_graphs=not args.no_cuda_graphs, compile=args.compile)
    env = GraphIsomorphismEnv(
        setup.pairs, protocol, setup.rewards, config.num_envs, 0, device
    )
    policy = ppo.acting_policy(agents, protocol, config, device)
    estimate_advantages = ppo.advantage_estimator(config, device)
    updaters = (
        {}
        if args.plain
        else ppo.make_updaters(agents, agents, config, setup.eager_loss)
    )
    optimizers = {} if updaters else ppo.make_optimizers(agents, config)
    shuffle = torch.Generator().manual_seed(1)
    names = variants(args)
    phases = {v: {"collect": [], "advantages": [], "update": []} for v in names}
    for iteration in range((args.iterations + 1) * len(names)):
        variant = names[iteration % len(names)]
        select_variant(args, variant)
        times = {}
        start = _now(device)
        with torch.no_grad():
            experience = collect(env, policy, config.steps_per_iteration, config.gamma)
            times["collect"] = _now(device) - start
            start = _now(device)
            advantages, returns = estimate_advantages(experience)
            times["advantages"] = _now(device) - start
        start = _now(device)
        if updaters:
            ppo.update_agents_fixed_shape(
                updaters, experience, advantages, returns, config, shuffle
            )
        else:
            ppo.update_agents(
                agents, optimizers, experience, advantages, returns, config, shuffle
            )
        times["update"] = _now(device) - start
        # The first iteration of each variant warms up allocators and caches.
        if iteration >= len(names):
            for key, value in times.items():
                phases[variant][key].append(value)
    frames = config.num_envs * config.steps_per_iteration
    figures: dict[str, float | int | str] = {
        "env": setup.env,
        "frames_per_iteration": frames,
        "epochs": config.epochs,
        "minibatch_size": config.minibatch_size,
        "update_path": "fixed_shape" if updaters else "plain",
        "compile": config.compile,
        "cuda_graphs": bool(updaters) and next(iter(updaters.values())).graphed,
    }
    for variant, variant_phases in phases.items():
        per_iteration = sum(statistics.median(v) for v in variant_phases.values())
        for key, values in variant_phases.items():
            figures[f"{variant}{key}_ms"] = 1000 * statistics.median(values)
        figures[f"{variant}iteration_seconds"] = per_iteration
        figures[f"{variant}training_frames_per_second"] = frames / per_iteration
        figures[f"{variant}projected_hours_for_configured_run"] = (
            per_iteration * config.iterations / 3600
        )
    figures.update(peak_memory(device))
    report("ppo", figures, args)


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


if __name__ == "__main__":
    main()
