"""Benchmark: operations (GPU kernel launches) of one captured PPO gradient step.

Usage::

    .venv/bin/python benchmarks/step_kernels.py --env gi_ppo

For each agent, one minibatch step as the CUDA graph captures it (padded, fixed
shape), counted operation by operation with the fused CPU kernels off, so that
the network runs the PyTorch operations it runs on a GPU; with the lean step
(the default: the loss's hand-written backward, the gradients copied into the
flat buffer at once) and without it (``PVG_LEAN_STEP=0``). A replayed graph costs
a few microseconds per kernel at these sizes, so the counts are what the captured
update's time follows; ``ppo.py --device cuda --alternate PVG_LEAN_STEP`` times it.
"""

from __future__ import annotations

import os
from dataclasses import replace

os.environ["PVG_FUSED_CPU_KERNELS"] = "0"  # before the agents are built

import torch  # noqa: E402
from _common import paper_setup, parser, peak_memory, report  # noqa: E402

from pvg_pipeline.pvg.operation_count import OperationCounter  # noqa: E402
from pvg_pipeline.pvg.scenarios.graph_isomorphism.environment import (  # noqa: E402
    GraphIsomorphismEnv,
)
from pvg_pipeline.pvg.trainers import ppo  # noqa: E402
from pvg_pipeline.pvg.trainers.fast.fixed_shape_update import (
    minibatch_plan,
)  # noqa: E402
from pvg_pipeline.pvg.trainers.ppo_loss import LEAN_STEP_SWITCH  # noqa: E402
from pvg_pipeline.pvg.trainers.rollouts import collect  # noqa: E402


def main() -> None:
    """Run the benchmark."""
    args = parser(__doc__.splitlines()[0]).parse_args()
    setup = paper_setup(args, num_pairs=1_000)
    config = ppo.PPOConfig(**setup.ppo)
    env = GraphIsomorphismEnv(
        setup.pairs, setup.protocol, setup.rewards, config.num_envs, 0, setup.device
    )
    policy = ppo.acting_policy(setup.agents, setup.protocol, config, setup.device)
    with torch.no_grad():
        experience = collect(env, policy, config.steps_per_iteration, config.gamma)
        advantages, returns = ppo.compute_advantages(experience, config)
    data = experience.data.reshape(-1)
    figures: dict[str, float | int | str] = {"env": setup.env}
    for lean in ("1", "0"):
        os.environ[LEAN_STEP_SWITCH] = lean
        suffix = "" if lean == "1" else "_without_lean_step"
        # Eager steps (no graph): each operation is counted as it runs.
        eager = replace(config, cuda_graphs=False)
        updaters = ppo.make_updaters(setup.agents, setup.agents, eager)
        for name, updater in updaters.items():
            updater.fixed_shape = True  # the padded step that a graph captures
            index = updater.index
            updater.load(
                data,
                advantages[..., index].reshape(-1),
                returns[..., index].reshape(-1),
            )
            # The first minibatch of an epoch, padded as the trainer pads it.
            plan, sizes = minibatch_plan(
                data["active"][:, index], 1, config.minibatch_size, torch.Generator()
            )
            rows = plan[0].to(setup.device)
            weight = (torch.arange(len(rows)) < sizes[0]).float().to(setup.device)
            updater._step(rows, weight)  # loads the minibatch; creates lazy state
            with OperationCounter() as counter:
                updater._padded_step(lean == "1")
            figures[f"{name}_operations{suffix}"] = counter.total
            if lean == "0":
                figures[f"{name}_fewer_operations_percent"] = 100 * (
                    1 - figures[f"{name}_operations"] / counter.total
                )
            updater.release()
    figures.update(peak_memory(setup.device))
    report("step_kernels", figures, args)


if __name__ == "__main__":
    main()
