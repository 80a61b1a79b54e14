"""Benchmark and GPU check: full PPO training throughput for a fixed time budget.

Usage::

    .venv/bin/python benchmarks/train_throughput.py --env gi_ppo --device cuda --minutes 6

Trains the environment's protocol and agents with its PPO settings for as many
iterations as fit in ``--minutes`` (at most ``--iterations``), then evaluates the
verifier on a test split.
Prints seconds per iteration (median after warm-up), training frames/s, the
projected time for the configured number of iterations, peak CPU/GPU memory and the
verifier's test accuracy. On an H100 it is the GPU check of docs/performance.md.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import torch
from _common import paper_setup, parser, peak_memory, report

from pvg_pipeline.pvg import evaluation
from pvg_pipeline.pvg.trainers.ppo import PPOConfig, train_ppo


class _OutOfTime(Exception):
    pass


def main() -> None:
    """Run the benchmark."""
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--minutes", type=float, default=6.0)
    options.add_argument(
        "--iterations",
        type=int,
        help="stop after this many iterations if the time budget is not used up "
        "first (to compare test accuracy at the same point of training)",
    )
    options.add_argument(
        "--seed",
        type=int,
        help="seed (initial weights, pair order, sampling) instead of the configured "
        "one, e.g. to see how much the test accuracy varies between seeds",
    )
    options.add_argument("--train-pairs", type=int, default=10_000)
    options.add_argument("--test-pairs", type=int, default=1_000)
    options.add_argument(
        "--no-cuda-graphs", action="store_true", help="eager steps on CUDA"
    )
    options.add_argument("--compile", action="store_true", help="torch.compile loss")
    args = options.parse_args()
    setup = paper_setup(args, num_pairs=args.train_pairs, test_pairs=args.test_pairs)
    device = setup.device
    seed = setup.seed
    configured = PPOConfig(**setup.ppo)
    config = replace(
        configured,
        iterations=10**9,
        checkpoint_interval=10**9,
        eval_interval=10**9,
        cuda_graphs=not args.no_cuda_graphs,
        compile=args.compile,
    )
    stamps: list[float] = []
    deadline = time.perf_counter() + 60 * args.minutes

    def on_iteration(metrics: dict[str, float]) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())
        if len(stamps) % 100 == 0:
            print(
                f"iteration {len(stamps)}: {stamps[-1] - start:.1f} s, "
                f"rollout accuracy {metrics['verifier_accuracy']:.3f}",
                flush=True,
            )
        if stamps[-1] > deadline or len(stamps) == args.iterations:
            raise _OutOfTime

    start = time.perf_counter()
    try:
        train_ppo(
            setup.agents,
            setup.protocol,
            setup.rewards,
            setup.pairs,
            config,
            seed,
            device,
            on_iteration=on_iteration,
            progress=False,
            eager_loss=setup.eager_loss,
        )
    except _OutOfTime:
        pass
    durations = [b - a for a, b in zip([start, *stamps], stamps, strict=False)]
    steady = durations[1:] or durations
    per_iteration = statistics.median(steady)
    # The mean over the steady iterations also counts rare slow ones (logging,
    # a late capture), which the median leaves out.
    mean_iteration = statistics.fmean(steady)
    frames = config.num_envs * config.steps_per_iteration
    agents = {name: agent.cpu() for name, agent in setup.agents.items()}
    episodes = evaluation.play_episodes(agents, setup.protocol, setup.test_pairs)
    figures: dict[str, float | int | str] = {
        "env": setup.env,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
        "cuda_graphs": config.cuda_graphs and device.type == "cuda",
        "compile": config.compile,
        "seed": seed,
        "iterations_run": len(stamps),
        "first_iteration_seconds": durations[0],
        "iteration_seconds": per_iteration,
        "training_frames_per_second": frames / per_iteration,
        "projected_minutes_for_configured_run": per_iteration
        * configured.iterations
        / 60,
        "mean_iteration_seconds": mean_iteration,
        "projected_minutes_from_mean": mean_iteration * configured.iterations / 60,
        "configured_iterations": configured.iterations,
        "verifier_test_accuracy": evaluation.summary_metrics(episodes)["accuracy"],
        **peak_memory(device),
    }
    report("train_throughput", figures, args)


if __name__ == "__main__":
    main()
