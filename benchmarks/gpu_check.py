"""GPU check: the CUDA-graph paths compute what the eager paths compute.

Usage::

    python benchmarks/gpu_check.py --bundle bundle.pt --device cuda

On one collection of the bundle's configuration it compares, on the GPU:

- one captured PPO gradient step with the plain eager step (losses, clipped
  gradient, parameter update), and a full iteration of captured steps with the
  plain update (mean losses; the parameter gap is printed only: over 80 Adam
  steps rounding differences grow chaotically, 0.34 for the prover between the
  plain path on 1 and 2 CPU threads);
- the captured acting step with an eager re-scoring of the same actions;
- one iteration with each agent's captured steps on its own CUDA stream (the
  default) against the same steps one agent after the other: bit for bit;
- the captured advantages (final values and GAE) with the eager ones.

Prints one PASS/FAIL line per check and exits non-zero on a failure.
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import replace

import torch
from _common import paper_setup, parser

from pvg_pipeline.pvg.scenarios.graph_isomorphism.environment import (
    GraphIsomorphismEnv,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.game import OBSERVATION_KEYS, step
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import (
    MultiAgentPolicy,
    action_log_prob,
)
from pvg_pipeline.pvg.trainers import ppo
from pvg_pipeline.pvg.trainers.fast.graphed_policy import (
    GAME_STEP_SWITCH,
    GraphedPolicy,
)
from pvg_pipeline.pvg.trainers.rollouts import collect


def _flat(agent: torch.nn.Module, grad: bool = False) -> torch.Tensor:
    return torch.cat(
        [(p.grad if grad else p).detach().reshape(-1) for p in agent.parameters()]
    )


def main() -> None:
    """Run the checks."""
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--compile", action="store_true", help="torch.compile loss")
    options.add_argument("--one-step-only", action="store_true")
    args = options.parse_args()
    setup = paper_setup(args, num_pairs=4_000)
    agents, protocol, device = setup.agents, setup.protocol, setup.device
    config = replace(ppo.PPOConfig(**setup.ppo), cuda_graphs=True, compile=args.compile)
    env = GraphIsomorphismEnv(
        setup.pairs, protocol, setup.rewards, config.num_envs, 0, device
    )
    failures = 0

    def check(name: str, ok: bool, detail: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)

    graphed = ppo.acting_policy(agents, protocol, config, device)
    with torch.no_grad():
        try:
            experience = collect(env, graphed, config.steps_per_iteration, config.gamma)
        except Exception as error:  # report it, and check the rest without it
            check("collection with the captured game step runs", False, repr(error))
            os.environ[GAME_STEP_SWITCH] = "0"
            graphed = ppo.acting_policy(agents, protocol, config, device)
            experience = collect(env, graphed, config.steps_per_iteration, config.gamma)
        advantages, returns = ppo.compute_advantages(experience, config)
        data = experience.data.reshape(-1)
        worst = 0.0
        for index, agent in enumerate(agents.values()):
            rows = data["active"][:, index]
            mb = data[rows]
            output = agent(*(mb[k] for k in OBSERVATION_KEYS[:4]))
            log_prob, _, _ = action_log_prob(
                output, mb["node"][:, index], mb["decision"], mb["decision_allowed"]
            )
            worst = max(worst, float((log_prob - mb["log_prob"][:, index]).abs().max()))
    check(
        "captured acting step", worst < 1e-4, f"max |log-prob difference| {worst:.2e}"
    )
    player = (  # (on the CPU the trainer acts without the wrapper)
        graphed
        if isinstance(graphed, GraphedPolicy)
        else GraphedPolicy(MultiAgentPolicy(agents, protocol, only_active=False))
    )
    with torch.no_grad():
        try:
            mismatches = _game_step_mismatches(player, env, steps=4)
        except Exception as error:  # report it, and go on with the other checks
            mismatches = [repr(error)]
    check(
        "captured game step = eager game step",
        not mismatches and (player.graphed or device.type != "cuda"),
        f"graphed {player.graphed}, mismatched {mismatches or 'nothing'}",
    )
    estimate = ppo.advantage_estimator(config, device)
    with torch.no_grad():
        for attempt in ("captured", "replayed"):
            values = estimate(experience)
            gap = max(
                float((value - eager).abs().max() / eager.abs().max().clamp_min(1e-6))
                for value, eager in zip(values, (advantages, returns), strict=True)
            )
            check(f"{attempt} advantages", gap < 1e-5, f"relative gap {gap:.2e}")
    eager = MultiAgentPolicy(agents, protocol)
    with torch.no_grad():
        eager_experience = collect(env, eager, 2, config.gamma)
    check(
        "eager acting step still runs",
        eager_experience.data.batch_size[0] == 2,
        "2 steps collected",
    )

    for label, settings in [
        ("one captured gradient step", replace(config, epochs=1, minibatch_size=4096)),
        ("one iteration of captured steps", config),
    ][: 1 if args.one_step_only else 2]:
        try:
            plain_agents = copy.deepcopy(agents)
            optimizers = {
                n: torch.optim.Adam(a.parameters(), lr=settings.learning_rate)
                for n, a in plain_agents.items()
            }
            plain_losses = ppo.update_agents(
                plain_agents,
                optimizers,
                experience,
                advantages,
                returns,
                settings,
                torch.Generator().manual_seed(1),
            )
            fast_agents = copy.deepcopy(agents)
            updaters = ppo.make_updaters(fast_agents, fast_agents, settings)
            losses = ppo.update_agents_fixed_shape(
                updaters,
                experience,
                advantages,
                returns,
                settings,
                torch.Generator().manual_seed(1),
            )
            for name, updater in updaters.items():
                check(f"{label} is a CUDA graph ({name})", updater.graphed, "")
                # The policy loss is ~0 (normalised advantages); compare it absolutely.
                loss_gap = max(
                    abs(losses[name][k] - plain_losses[name][k])
                    / (
                        1.0
                        if k == "policy_loss"
                        else max(abs(plain_losses[name][k]), 1e-3)
                    )
                    for k in losses[name]
                )
                # One step must agree to rounding; over a whole iteration the
                # chaotic growth (below) also moves the mean losses by ~1-2 %.
                limit = 1e-3 if settings.epochs == 1 else 5e-2
                check(f"{label}: losses ({name})", loss_gap < limit, f"{loss_gap:.2e}")
                if settings.epochs == 1:
                    plain_grad = _flat(plain_agents[name], grad=True)
                    gap = float(
                        (updater.flat.parameter.grad - plain_grad).norm()
                        / plain_grad.norm()
                    )
                    check(f"{label}: gradient ({name})", gap < 1e-4, f"{gap:.2e}")
                updater.release()
                start = _flat(agents[name])
                plain_step = _flat(plain_agents[name]) - start
                fast_step = _flat(fast_agents[name]) - start
                gap = float((fast_step - plain_step).norm() / plain_step.norm())
                if settings.epochs == 1:
                    check(
                        f"{label}: parameter update ({name})", gap < 2e-2, f"{gap:.2e}"
                    )
                else:
                    # Over 80 Adam steps rounding grows chaotically (the plain path
                    # against itself with 1 vs 2 CPU threads: 0.34 for the prover).
                    print(f"INFO {label}: parameter update gap ({name}) {gap:.2e}")
        except Exception as error:  # report it, and go on with the other checks
            check(f"{label} runs", False, repr(error))
    if not args.one_step_only and device.type == "cuda":
        try:
            gap = _streams_gap(agents, experience, advantages, returns, config)
        except Exception as error:  # report it as a failure
            gap = repr(error)
        check("agents on their own streams = one after the other", gap == 0, f"{gap}")
    sys.exit(1 if failures else 0)


def _game_step_mismatches(policy, env, steps: int) -> list[str]:
    """What differs between the graphed policy's game step (captured with its
    acting step) and the eager game step given the same actions, over ``steps``
    steps (the first captures, the others replay)."""
    env.reset()
    state, game = env.state, (env.protocol, env.tables, env.reward_constants)
    mismatches = []
    for index in range(steps):
        observation, played, reward, done = policy.play(state, *game)
        expected, expected_reward, expected_done = step(
            state, observation["node"], observation["decision"], *game
        )
        for key in expected.keys():
            if not torch.equal(played[key], expected[key]):
                mismatches.append(f"{key} at step {index}")
        if not torch.equal(reward, expected_reward):
            mismatches.append(f"reward at step {index}")
        if not torch.equal(done, expected_done):
            mismatches.append(f"done at step {index}")
        state = env.replace_finished(played, done)
    return mismatches


def _streams_gap(agents, experience, advantages, returns, config) -> float:
    """Largest parameter difference between an iteration with the agents'
    updates on two streams at once and one with them one after the other."""
    finals = []
    for concurrent in (True, False):
        copies = copy.deepcopy(agents)
        updaters = ppo.make_updaters(copies, copies, config)
        for iteration in range(2):  # the first captures, the second replays
            ppo.update_agents_fixed_shape(
                updaters,
                experience,
                advantages,
                returns,
                config,
                torch.Generator().manual_seed(iteration),
                concurrent=concurrent,
            )
        finals.append(
            {n: u.flat.parameter.detach().clone() for n, u in updaters.items()}
        )
        for updater in updaters.values():
            updater.release()
    return max(float((finals[0][n] - finals[1][n]).abs().max()) for n in finals[0])


if __name__ == "__main__":
    main()
