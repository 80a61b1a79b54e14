"""Calls replayed from CUDA graphs (acting, advantages) compute the eager results."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
import torch

from pvg_pipeline.pvg.protocols import Rewards, build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import build_agents
from pvg_pipeline.pvg.scenarios.graph_isomorphism.environment import (
    GraphIsomorphismEnv,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.game import step
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import MultiAgentPolicy
from pvg_pipeline.pvg.trainers import ppo
from pvg_pipeline.pvg.trainers.fast.captured import CapturedCall, capture_graph
from pvg_pipeline.pvg.trainers.fast.graphed_policy import (
    GAME_STEP_SWITCH,
    GraphedPolicy,
)
from pvg_pipeline.pvg.trainers.rollouts import collect
from tests.pvg.trainers.test_training import TINY

CONFIG = ppo.PPOConfig(num_envs=12, steps_per_iteration=5, cuda_graphs=True)


def _game(small_pairs, device):
    protocol = build_protocol("pvg", max_message_rounds=4)
    torch.manual_seed(0)
    agents = build_agents(protocol, TINY, TINY, 9)
    for agent in agents.values():
        agent.to(device).eval()
    env = GraphIsomorphismEnv(
        small_pairs, protocol, Rewards(), CONFIG.num_envs, seed=3, device=device
    )
    return protocol, agents, env


def test_graphed_policy_acts_like_its_policy_where_nothing_is_captured(small_pairs):
    """On the CPU the wrapper runs its policy eagerly: same transitions, so the
    plumbing of observation and action keys is the policy's own."""
    protocol, agents, env = _game(small_pairs, torch.device("cpu"))
    policy = MultiAgentPolicy(agents, protocol, only_active=False)
    collections = []
    for acting in (GraphedPolicy(policy), policy):
        env.set_seed(3)
        env.reset()
        torch.manual_seed(1)
        with torch.no_grad():
            collections.append(
                collect(env, acting, CONFIG.steps_per_iteration, CONFIG.gamma)
            )
    graphed, plain = collections
    for key in ("node", "decision", "log_prob", "value", "message_history"):
        torch.testing.assert_close(graphed.data[key], plain.data[key], msg=key)
    torch.testing.assert_close(graphed.reward, plain.reward)
    torch.testing.assert_close(graphed.outcomes.label, plain.outcomes.label)
    assert graphed.done.any()
    with pytest.raises(ValueError, match="only_active=False"):
        GraphedPolicy(MultiAgentPolicy(agents, protocol))


def test_graphed_play_acts_and_steps_the_game(small_pairs, monkeypatch):
    """``collect`` plays through the wrapper's combined call; unchanged state keys
    keep their tensors, and the wrapper refuses a second game (its graph holds
    the first one's tables)."""
    protocol, agents, env = _game(small_pairs, torch.device("cpu"))
    graphed = GraphedPolicy(MultiAgentPolicy(agents, protocol, only_active=False))
    calls = []
    original = graphed.play
    monkeypatch.setattr(graphed, "play", lambda *a: calls.append(1) or original(*a))
    with torch.no_grad():
        collect(env, graphed, CONFIG.steps_per_iteration, CONFIG.gamma)
        assert len(calls) == CONFIG.steps_per_iteration
        state = env.state
        game = (env.protocol, env.tables, env.reward_constants)
        observation, played, _, _ = original(state, *game)
    assert played["adjacency"] is state["adjacency"]
    assert played["label"] is state["label"]
    assert torch.equal(played["round"], state["round"] + 1)
    assert set(observation.keys()) >= {"node", "decision", "log_prob", "value"}
    other = GraphIsomorphismEnv(small_pairs, protocol, Rewards(), CONFIG.num_envs)
    with pytest.raises(ValueError, match="one game"):
        original(state, other.protocol, other.tables, other.reward_constants)
    monkeypatch.setenv(GAME_STEP_SWITCH, "0")  # the eager game step after acting
    with torch.no_grad():
        collect(env, graphed, CONFIG.steps_per_iteration, CONFIG.gamma)
    assert len(calls) == CONFIG.steps_per_iteration


def test_advantage_estimator_on_the_cpu_is_compute_advantages(small_pairs):
    protocol, agents, env = _game(small_pairs, torch.device("cpu"))
    with torch.no_grad():
        experience = collect(env, MultiAgentPolicy(agents, protocol), 5, CONFIG.gamma)
        expected = ppo.compute_advantages(experience, CONFIG)
        estimate = ppo.advantage_estimator(CONFIG, torch.device("cpu"))
        for value, reference in zip(estimate(experience), expected, strict=True):
            assert torch.equal(value, reference)
    assert expected[0].abs().sum() > 0


def test_a_captured_call_on_cpu_tensors_stays_eager():
    call = CapturedCall(lambda x, y: (x + y, x * y), "a sum")
    assert call(torch.ones(3), torch.full((3,), 2.0))[1].tolist() == [2.0] * 3
    assert not call.graphed


@pytest.fixture
def fake_cuda(monkeypatch):
    """CUDA's stream and graph calls, recorded instead of run (CPU only)."""
    log: list = []

    class Stream:
        def wait_stream(self, other):
            log.append("wait")

    @contextlib.contextmanager
    def on_stream(stream):
        log.append("side stream")
        yield

    @contextlib.contextmanager
    def graph(cuda_graph, stream=None):
        log.append(("capture on", stream))
        yield

    for name, value in {
        "Stream": Stream,
        "current_stream": Stream,
        "stream": on_stream,
        "graph": graph,
        "CUDAGraph": object,
        "synchronize": lambda: log.append("synchronize"),
    }.items():
        monkeypatch.setattr(torch.cuda, name, value)
    return log


def test_capture_warms_up_three_times_then_captures_once(fake_cuda):
    calls = []

    def run():
        calls.append(len(fake_cuda))
        fake_cuda.append("run")
        return len(calls)

    captured = capture_graph(
        run, "a step", stream="own", after_warm_up=lambda: fake_cuda.append("undo")
    )
    assert captured is not None and captured[1] == 4  # what the captured call gave
    assert fake_cuda == [
        "wait",
        "side stream",
        "run",
        "run",
        "run",
        "wait",
        "undo",
        ("capture on", "own"),
        "run",
    ]


def test_a_failed_capture_warns_and_returns_nothing(fake_cuda):
    def run():
        if ("capture on", None) in fake_cuda:
            raise RuntimeError("operation not permitted when stream is capturing")

    with pytest.warns(UserWarning, match="capturing a step as a CUDA graph failed"):
        assert capture_graph(run, "a step") is None
    assert fake_cuda[-1] == "synchronize"


@pytest.mark.gpu
def test_a_captured_call_replays_on_new_inputs():
    call = CapturedCall(lambda x: (x.exp().cumsum(0),), "a cumulative sum")
    first = torch.arange(4.0, device="cuda")
    second = torch.linspace(-1, 1, 4, device="cuda")
    out_first = call(first)[0]
    assert call.graphed
    out_second = call(second)[0]
    torch.testing.assert_close(out_first, first.exp().cumsum(0))
    torch.testing.assert_close(out_second, second.exp().cumsum(0))  # not stale


@pytest.mark.gpu
def test_captured_advantages_match_the_eager_ones(small_pairs):
    device = torch.device("cuda")
    protocol, agents, env = _game(small_pairs, device)
    estimate = ppo.advantage_estimator(CONFIG, device)
    with torch.no_grad():
        for _ in range(3):  # the first call captures, the others replay
            experience = collect(
                env, MultiAgentPolicy(agents, protocol), 5, CONFIG.gamma
            )
            expected = ppo.compute_advantages(experience, CONFIG)
            for value, reference in zip(estimate(experience), expected, strict=True):
                torch.testing.assert_close(value, reference, rtol=1e-5, atol=1e-6)
    eager = ppo.advantage_estimator(replace(CONFIG, cuda_graphs=False), device)
    assert eager(experience)[0].shape == expected[0].shape


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_the_captured_game_step_is_the_eager_one(small_pairs, device):
    """Given the actions the graph sampled, its game step equals the eager one,
    at capture and at every replay (on the CPU: every state key comes back)."""
    protocol, agents, env = _game(small_pairs, torch.device(device))
    graphed = GraphedPolicy(MultiAgentPolicy(agents, protocol, only_active=False))
    env.reset()
    state, game = env.state, (env.protocol, env.tables, env.reward_constants)
    with torch.no_grad():
        for _ in range(4):
            observation, played, reward, done = graphed.play(state, *game)
            expected, expected_reward, expected_done = step(
                state, observation["node"], observation["decision"], *game
            )
            for key in expected.keys():
                assert torch.equal(played[key], expected[key]), key
            assert torch.equal(reward, expected_reward)
            assert torch.equal(done, expected_done)
            state = env.replace_finished(played, done)
    assert graphed.graphed == (device == "cuda")
