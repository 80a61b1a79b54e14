"""The fixed-shape (CUDA-graph ready) PPO update agrees with the plain update."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import replace

import pytest
import torch

from pvg_pipeline.pvg.protocols import build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import build_agents
from pvg_pipeline.pvg.trainers import ppo
from pvg_pipeline.pvg.trainers.fast import fixed_shape_update
from pvg_pipeline.pvg.trainers.fast.flat_parameters import FlatParameters, flattenable
from pvg_pipeline.pvg.trainers.fast.update_step import AgentUpdater
from tests.pvg.trainers.collection import CONFIG, on_device
from tests.pvg.trainers.test_training import SMALL


def _update_both_ways(collection, config, fixed_shape, compile_loss=False):
    """Plain and fixed-shape updates from the same agents and permutations."""
    agents, experience, advantages, returns = collection
    plain_agents = copy.deepcopy(agents)
    optimizers = {
        n: torch.optim.Adam(a.parameters(), lr=config.learning_rate)
        for n, a in plain_agents.items()
    }
    plain_losses = ppo.update_agents(
        plain_agents,
        optimizers,
        experience,
        advantages,
        returns,
        config,
        torch.Generator().manual_seed(1),
    )
    fast_agents = copy.deepcopy(agents)
    updaters = ppo.make_updaters(fast_agents, fast_agents, config)
    for updater in updaters.values():
        updater.fixed_shape = fixed_shape  # padded minibatches, as in the graph
        updater.compile_loss = compile_loss
    fast_losses = ppo.update_agents_fixed_shape(
        updaters,
        experience,
        advantages,
        returns,
        config,
        torch.Generator().manual_seed(1),
    )
    return plain_agents, plain_losses, fast_agents, fast_losses, updaters


@pytest.mark.parametrize(
    "fixed_shape, compile_loss",
    [
        (False, False),
        (True, False),
        pytest.param(True, True, marks=pytest.mark.slow, id="compiled"),
    ],
)
def test_one_step_has_the_plain_gradient(collection, fixed_shape, compile_loss):
    one_step = replace(CONFIG, epochs=1, minibatch_size=10_000)
    plain_agents, plain_losses, _, fast_losses, updaters = _update_both_ways(
        collection, one_step, fixed_shape, compile_loss
    )
    for name, updater in updaters.items():
        assert fast_losses[name] == pytest.approx(
            plain_losses[name], rel=1e-5, abs=1e-6
        )
        # The clipped gradient of the single step stays in .grad on both paths.
        plain_grad = _flat(plain_agents[name], grad=True)
        torch.testing.assert_close(
            updater.flat.parameter.grad, plain_grad, rtol=1e-4, atol=1e-7
        )
        assert plain_grad.norm() > 0
        compiled = updater._loss not in (None, updater._padded_losses)
        assert compiled == compile_loss
        assert (updater._loss is None) == (not fixed_shape)
        updater.release()


@pytest.mark.parametrize("fixed_shape", [False, True])
def test_fixed_shape_update_matches_the_plain_update(collection, fixed_shape):
    agents, experience, _, _ = collection
    plain_agents, plain_losses, fast_agents, losses, updaters = _update_both_ways(
        collection, CONFIG, fixed_shape
    )
    for updater in updaters.values():
        updater.release()
    # Several minibatches per epoch, the last one short: padding is exercised.
    active = experience.data["active"].reshape(-1, 2).sum(0)
    assert all(CONFIG.minibatch_size < int(n) for n in active)
    assert all(int(n) % CONFIG.minibatch_size for n in active)
    for name in agents:
        assert losses[name] == pytest.approx(plain_losses[name], rel=1e-4, abs=1e-6)
        # Adam turns rounding-level differences of near-zero gradients into
        # lr-sized steps, so compare the whole update, not element by element.
        start = _flat(agents[name])
        fast_step = _flat(fast_agents[name]) - start
        plain_step = _flat(plain_agents[name]) - start
        assert plain_step.norm() > 0
        assert (fast_step - plain_step).norm() / plain_step.norm() < 1e-2


@pytest.mark.parametrize("fixed_shape", [False, True])
def test_update_equals_the_plain_update_in_float64(collection, fixed_shape):
    """In float64 rounding no longer hides a difference: a whole update (3 epochs,
    several minibatches, the last one short, so padded on the fixed-shape path)
    must give the plain update's parameters to ~1e-11. A minibatch packed with
    the wrong rows or advantages normalised over the wrong rows moves them by
    ~1e-2 (the float32 test above allows that much)."""
    agents, experience, advantages, returns = collection

    def double(tensors):
        return tensors.apply(lambda t: t.double() if t.is_floating_point() else t)

    experience = replace(
        experience,
        data=double(experience.data),
        reward=experience.reward.double(),
        final_observation=double(experience.final_observation),
        bootstrap_value=experience.bootstrap_value.double(),
    )
    agents = {n: copy.deepcopy(a).double() for n, a in agents.items()}
    collection64 = (agents, experience, advantages.double(), returns.double())
    plain_agents, plain_losses, fast_agents, losses, updaters = _update_both_ways(
        collection64, CONFIG, fixed_shape
    )
    for name, updater in updaters.items():
        assert updater.fixed_shape == fixed_shape
        updater.release()
        assert losses[name] == pytest.approx(plain_losses[name], rel=1e-9, abs=1e-12)
        start = _flat(agents[name])
        fast_step = _flat(fast_agents[name]) - start
        plain_step = _flat(plain_agents[name]) - start
        assert fast_step.dtype == torch.float64 and plain_step.norm() > 0
        assert (fast_step - plain_step).norm() / plain_step.norm() < 1e-8


def _flat(agent, grad=False):
    return torch.cat(
        [(p.grad if grad else p).detach().reshape(-1) for p in agent.parameters()]
    )


def test_flat_parameters_share_storage_and_release_it():
    agents = build_agents(build_protocol("pvg"), SMALL, SMALL, 8)
    prover = agents["prover"]
    before = {k: v.clone() for k, v in prover.state_dict().items()}
    flat = FlatParameters(prover)
    with torch.no_grad():
        flat.parameter.add_(1.0)
    for key, value in prover.named_parameters():
        torch.testing.assert_close(value, before[key] + 1.0)
    flat.release()
    with torch.no_grad():
        flat.parameter.add_(1.0)  # no longer reaches the module
    for key, value in prover.named_parameters():
        torch.testing.assert_close(value, before[key] + 1.0)
        assert value.grad is None


def test_shared_bodies_are_left_to_the_plain_path():
    protocol = build_protocol("pvg")
    shared = build_agents(protocol, SMALL, SMALL, 8, shared_body=True)
    assert not flattenable(shared)
    assert ppo.make_updaters(shared, shared, CONFIG) == {}
    assert flattenable(build_agents(protocol, SMALL, SMALL, 8))


def _fast_update(collection, concurrent):
    agents, experience, advantages, returns = collection
    agents = copy.deepcopy(agents)
    updaters = ppo.make_updaters(agents, agents, CONFIG)
    losses = ppo.update_agents_fixed_shape(
        updaters,
        experience,
        advantages,
        returns,
        CONFIG,
        torch.Generator().manual_seed(1),
        concurrent=concurrent,
    )
    for updater in updaters.values():
        updater.release()
    return agents, losses


def test_concurrent_agent_updates_are_reproducible_and_match(collection):
    threads = torch.get_num_threads()
    first, first_losses = _fast_update(collection, concurrent=True)
    assert torch.get_num_threads() == threads  # restored after the worker threads
    again, again_losses = _fast_update(collection, concurrent=True)
    sequential, sequential_losses = _fast_update(collection, concurrent=False)
    assert first_losses == again_losses
    start = collection[0]
    for name in start:
        assert torch.equal(_flat(first[name]), _flat(again[name]))
        assert first_losses[name] == pytest.approx(
            sequential_losses[name], rel=1e-4, abs=1e-6
        )
        step = _flat(sequential[name]) - _flat(start[name])
        gap = (_flat(first[name]) - _flat(sequential[name])).norm() / step.norm()
        assert gap < 1e-2


@pytest.mark.gpu
def test_agents_on_their_own_cuda_streams_match_one_after_the_other(collection):
    """Two captured updates replayed on two streams at once give the same
    parameters, bit for bit, as replaying them one after the other (each graph
    has its own cuBLAS workspace and memory pool; the waits order the buffers)."""
    on_gpu = on_device(torch.device("cuda"), collection)
    config = replace(CONFIG, cuda_graphs=True)
    results = {}
    for concurrent in (True, False):
        agents = {n: copy.deepcopy(a) for n, a in on_gpu[0].items()}
        updaters = ppo.make_updaters(agents, agents, config)
        assert all(u.graphed and u.stream is not None for u in updaters.values())
        losses = [
            ppo.update_agents_fixed_shape(
                updaters,
                *on_gpu[1:],
                config,
                torch.Generator().manual_seed(iteration),
                concurrent=concurrent,
            )
            for iteration in range(3)  # the first captures, the others replay
        ]
        for updater in updaters.values():
            updater.release()
        results[concurrent] = losses, {n: _flat(a).cpu() for n, a in agents.items()}
    assert results[True][0] == results[False][0]
    for name, parameters in results[True][1].items():
        assert torch.equal(parameters, results[False][1][name])


class _RecordingStream:
    """Stands in for a CUDA stream on the CPU: records waits and what ran on it."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def wait_stream(self, other):
        self.log.append(("wait", self.name, other.name))


def test_each_agent_is_queued_on_its_own_stream_between_two_waits(
    collection, monkeypatch
):
    """The stream orchestration, on the CPU: every agent's stream waits for the
    main stream (the static buffers are loaded there) before its steps are queued
    on it, and the main stream waits for every agent's stream before the losses
    are read."""
    log: list[tuple[str, ...]] = []
    main = _RecordingStream("main", log)
    current = [main]

    @contextlib.contextmanager
    def on_stream(stream):
        current.append(stream)
        yield
        current.pop()

    monkeypatch.setattr(
        fixed_shape_update.torch.cuda, "current_stream", lambda: current[-1]
    )
    monkeypatch.setattr(fixed_shape_update.torch.cuda, "stream", on_stream)
    run = AgentUpdater.run

    def recorded_run(self, *args):
        log.append(("run", current[-1].name, str(self.index)))
        return run(self, *args)

    def recorded_mean_losses(self, steps):
        log.append(("read", current[-1].name, str(self.index)))
        return mean_losses(self, steps)

    mean_losses = AgentUpdater.mean_losses
    monkeypatch.setattr(AgentUpdater, "run", recorded_run)
    monkeypatch.setattr(AgentUpdater, "mean_losses", recorded_mean_losses)
    agents, experience, advantages, returns = collection
    agents = copy.deepcopy(agents)
    updaters = ppo.make_updaters(agents, agents, CONFIG)
    for name, updater in updaters.items():
        updater.stream = _RecordingStream(name, log)
    losses = ppo.update_agents_fixed_shape(
        updaters, experience, advantages, returns, CONFIG, torch.Generator()
    )
    prover, verifier = updaters
    assert log == [
        ("wait", prover, "main"),
        ("run", prover, "0"),
        ("wait", verifier, "main"),
        ("run", verifier, "1"),
        ("wait", "main", prover),
        ("wait", "main", verifier),
        ("read", "main", "0"),
        ("read", "main", "1"),
    ]
    assert set(losses) == {prover, verifier}
    assert all(
        torch.isfinite(torch.tensor(list(v.values()))).all() for v in losses.values()
    )
    monkeypatch.setenv("PVG_CUDA_STREAMS", "0")
    log.clear()
    ppo.update_agents_fixed_shape(
        updaters, experience, advantages, returns, CONFIG, torch.Generator()
    )
    assert [entry[0] for entry in log] == ["run", "read", "run", "read"]
    assert all(entry[1] == "main" for entry in log)


def test_the_fused_cpu_adam_step_is_torch_adam(collection):
    """Three steps of the updater's fused Adam give torch's Adam's parameters and
    state (to rounding), and its state is one that torch's Adam can go on from."""
    agents = copy.deepcopy(collection[0])
    updaters = ppo.make_updaters(agents, agents, CONFIG)
    updater = next(iter(updaters.values()))
    parameter = updater.flat.parameter
    reference = torch.nn.Parameter(parameter.detach().clone())
    adam = torch.optim.Adam([reference], lr=CONFIG.learning_rate)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        gradient = torch.randn(parameter.shape, generator=generator)
        parameter.grad.copy_(gradient)
        reference.grad = gradient.clone()
        updater._adam_step()
        adam.step()
    torch.testing.assert_close(parameter.detach(), reference.detach())
    state = updater.optimizer.state[parameter]
    for key, value in adam.state[reference].items():
        torch.testing.assert_close(state[key], value)
    # torch's own step continues from the fused step's state.
    before = parameter.detach().clone()
    updater.optimizer.step()
    assert not torch.equal(parameter.detach(), before)
    assert float(state["step"]) == 4.0
