"""PPO and solo-agent trainers: learning, masking, checkpoints and exact resume."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest
import torch

from pvg_pipeline.pvg.graphs.generation import GenerationSpec, generate_graph_pairs
from pvg_pipeline.pvg.protocols import Rewards, build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import AgentArchitecture
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import (
    AgentSpec,
    build_agents,
    import_agents,
)
from pvg_pipeline.pvg.trainers.checkpoints import CheckpointStore
from pvg_pipeline.pvg.trainers.ppo import PPOConfig, TrainingDiverged, train_ppo
from pvg_pipeline.pvg.trainers.run import run_training
from pvg_pipeline.pvg.trainers.solo_agent import SoloAgentConfig, accuracy

CPU = torch.device("cpu")
SMALL = AgentSpec(architecture=AgentArchitecture(num_gnn_layers=2, d_gnn=16))
TINY = AgentSpec(
    architecture=AgentArchitecture(
        num_gnn_layers=1, d_gnn=8, d_gin_mlp=16, d_transformer=8, d_transformer_mlp=16
    )
)


def _easy_pairs(prime_table, num_pairs: int, seed: int):
    """Small graphs, non-isomorphic pairs only of WL score 1 (degrees differ)."""
    spec = GenerationSpec(
        num_pairs=num_pairs,
        seed=seed,
        graph_sizes=[7, 8],
        edge_probabilities=[0.5],
        max_nodes=8,
        wl_max_iterations=5,
        non_isomorphic_fraction=0.5,
        wl_score_proportions={1: 1.0},
        isomorphic_copied_fraction=0.5,
        pool_size=5_000,
        max_pool_draws=20,
    )
    return generate_graph_pairs(spec, prime_table, progress=False)


@pytest.fixture(scope="module")
def easy(prime_table):
    return _easy_pairs(prime_table, 400, 1), _easy_pairs(prime_table, 200, 2)


def _weights(agents):
    return {
        f"{n}.{k}": v.clone()
        for n, a in agents.items()
        for k, v in a.state_dict().items()
    }


def test_ppo_verifier_learns_an_easy_task(easy):
    train, _ = easy
    protocol = build_protocol("pvg", max_message_rounds=4)
    torch.manual_seed(0)
    agents = build_agents(protocol, SMALL, SMALL, 8)
    config = PPOConfig(
        iterations=12,
        num_envs=64,
        steps_per_iteration=8,
        epochs=4,
        minibatch_size=64,
        learning_rate=1e-3,
    )
    history = train_ppo(
        agents, protocol, Rewards(), train, config, 0, CPU, progress=False
    )
    first = history[0]["verifier_accuracy"]
    last = sum(row["verifier_accuracy"] for row in history[-3:]) / 3
    assert first < 0.7
    assert last > 0.85, [round(r["verifier_accuracy"], 2) for r in history]


def test_solo_verifier_learns_and_is_scored_on_the_test_split(easy, tmp_path):
    train, test = easy
    protocol = build_protocol("pvg")
    exported, history, info = run_training(
        "solo_agent",
        SoloAgentConfig(epochs=8, batch_size=64, learning_rate=3e-3),
        protocol,
        Rewards(),
        SMALL,
        SMALL,
        False,
        train,
        test,
        0,
        CPU,
        tmp_path,
    )
    assert info["trainer"] == "solo_agent"
    assert history[-1]["test_accuracy_verifier"] > 0.8
    # The reported figure is accuracy on the *test* split.
    verifier = import_agents(exported)["verifier"]
    assert accuracy(verifier, test, 64) == history[-1]["test_accuracy_verifier"]
    assert not list(tmp_path.iterdir())  # no PPO checkpoints for solo agents


def _run(pairs, root, iterations, resume=False, seed=0, spec=TINY, **settings):
    protocol = build_protocol("debate", max_message_rounds=4)
    config = PPOConfig(
        iterations=iterations,
        num_envs=8,
        steps_per_iteration=4,
        epochs=2,
        minibatch_size=8,
        checkpoint_interval=2,
        **settings,
    )
    return run_training(
        "ppo",
        config,
        protocol,
        Rewards(),
        spec,
        spec,
        False,
        pairs,
        pairs,
        seed,
        CPU,
        root,
        resume,
    )


def _EVALUATION_ONLY(row):  # noqa: N802 - reads as a constant set
    return {"frames_per_second"} | {
        k
        for k in row
        if k.startswith(("test_", "approx_kl_", "clip_fraction_", "explained_var"))
    }


def test_kill_and_resume_equals_an_uninterrupted_run(easy, tmp_path):
    train, _ = easy
    straight, straight_history, _ = _run(train, tmp_path / "a", 4)
    _run(train, tmp_path / "b", 2)  # "killed" after its checkpoint at iteration 2
    resumed, resumed_history, info = _run(train, tmp_path / "b", 4, resume=True)
    assert info["resumed_from_iteration"] == 2
    for name, entry in straight["agents"].items():
        for key, value in entry["state_dict"].items():
            assert torch.equal(value, resumed["agents"][name]["state_dict"][key]), key

    # The killed run evaluated at its last iteration (2), the straight one did
    # not: equal weights show that the evaluation left the training's random
    # numbers alone. Its metrics are the only extra keys.
    assert "test_accuracy" in resumed_history[1]
    assert "test_accuracy" not in straight_history[1]

    def strip(rows):
        return [
            {k: v for k, v in r.items() if k not in _EVALUATION_ONLY(r)} for r in rows
        ]

    assert strip(straight_history) == strip(resumed_history)
    assert straight_history[3]["test_accuracy"] == resumed_history[3]["test_accuracy"]
    # The resumed run wrote new checkpoints next to the old ones, replacing none.
    run_dir = next((tmp_path / "b").iterdir())
    assert CheckpointStore(run_dir, {}).iterations() == [2, 4]


def test_resume_refuses_other_settings_and_missing_checkpoints(easy, tmp_path):
    train, _ = easy
    with pytest.raises(FileNotFoundError, match="no checkpoint exists"):
        _run(train, tmp_path, 2, resume=True)
    _run(train, tmp_path, 2)
    with pytest.raises(ValueError, match="seed was 0, now 1"):
        _run(train, tmp_path, 4, resume=True, seed=1)


def test_resume_names_a_refused_setting_and_allows_a_new_learning_rate(
    easy, tmp_path, monkeypatch
):
    train, _ = easy
    _run(train, tmp_path, 2)
    with pytest.raises(ValueError) as refused:
        _run(train, tmp_path, 4, resume=True, gamma=0.9)
    assert "other settings: trainer.gamma was 0.95, now 0.9" in str(refused.value)

    # A lower learning rate is the usual recovery: allowed, used and recorded.
    used = []
    original = torch.optim.Adam.load_state_dict

    def spy(self, state):
        original(self, state)
        used.append(self)

    monkeypatch.setattr(torch.optim.Adam, "load_state_dict", spy)
    _, _, info = _run(train, tmp_path, 4, resume=True, learning_rate=1e-4)
    assert info["resumed_from_iteration"] == 2
    assert info["resumed_with_changes"] == {"trainer.learning_rate": [3e-4, 1e-4]}
    assert used and all(
        group["lr"] == 1e-4 for optimizer in used for group in optimizer.param_groups
    )
    # Its checkpoints carry the new rate: resuming them again changes nothing.
    _, _, again = _run(train, tmp_path, 6, resume=True, learning_rate=1e-4)
    assert again["resumed_from_iteration"] == 4
    assert again["resumed_with_changes"] == {}


def test_resume_sets_an_unreadable_newest_checkpoint_aside(easy, tmp_path):
    train, _ = easy
    _run(train, tmp_path, 4)
    run_dir = next(tmp_path.iterdir())
    newest = run_dir / "iteration_0000004.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    with pytest.warns(UserWarning, match="iteration_0000004.pt cannot be read"):
        resumed, _, info = _run(train, tmp_path, 4, resume=True)
    assert info["resumed_from_iteration"] == 2
    assert info["unreadable_checkpoints"] == [str(newest) + ".unreadable"]
    # Kept, not deleted; the iteration's checkpoint was written again.
    assert (run_dir / "iteration_0000004.pt.unreadable").stat().st_size == 1000
    assert CheckpointStore(run_dir, {}).iterations() == [2, 4]
    straight, _, _ = _run(train, tmp_path / "straight", 4)
    for name, entry in straight["agents"].items():
        for key, value in entry["state_dict"].items():
            assert torch.equal(value, resumed["agents"][name]["state_dict"][key])

    # Nothing readable at all: one message naming what was set aside.
    for path in run_dir.glob("iteration_*.pt"):
        path.write_bytes(b"not a checkpoint")
    with (
        pytest.warns(UserWarning),
        pytest.raises(FileNotFoundError, match="no readable checkpoint in .*set aside"),
    ):
        _run(train, tmp_path, 6, resume=True)


def test_checkpoints_are_never_overwritten(easy, tmp_path):
    train, _ = easy
    _run(train, tmp_path, 2)
    run_dir = next(tmp_path.iterdir())
    store = CheckpointStore(run_dir, {})
    state = store.load(2)
    with pytest.raises(FileExistsError):
        store.save(state)


def test_nan_loss_stops_with_the_iteration_and_keeps_the_last_checkpoint(
    easy, tmp_path, monkeypatch
):
    train, _ = easy
    from pvg_pipeline.pvg.scenarios.graph_isomorphism import agents as agents_module

    original = agents_module.GraphIsomorphismAgent.forward

    def poisoned(self, *args):
        output = original(self, *args)
        if torch.is_grad_enabled():
            output.value = output.value * float("nan")
        return output

    _run(train, tmp_path, 2)  # a good checkpoint at iteration 2
    monkeypatch.setattr(agents_module.GraphIsomorphismAgent, "forward", poisoned)
    run_dir = next(tmp_path.iterdir())
    with pytest.raises(TrainingDiverged) as diverged:
        _run(train, tmp_path, 6, resume=True)
    assert re.search(
        r"loss of agent '\w+' is nan at iteration 3; the last good checkpoint is "
        + re.escape(str(run_dir / "iteration_0000002.pt")),
        str(diverged.value),
    )
    assert CheckpointStore(run_dir, {}).iterations() == [2]
    # Before the first checkpoint: the message says there is none.
    with pytest.raises(TrainingDiverged, match="no checkpoint was written yet"):
        _run(train, tmp_path / "fresh", 2)
    assert not list((tmp_path / "fresh").glob("*/*.pt"))


@pytest.mark.parametrize("path", ["fixed_shape", "plain"])
def test_losses_use_only_the_steps_where_the_agent_acted(easy, path, monkeypatch):
    train, _ = easy
    protocol = build_protocol("pvg", max_message_rounds=4)
    torch.manual_seed(0)
    agents = build_agents(protocol, TINY, TINY, 8)
    rows = {name: 0 for name in agents}
    for name, agent in agents.items():
        agent.register_forward_hook(
            lambda m, args, out, name=name: rows.__setitem__(
                name, rows[name] + (len(args[0]) if torch.is_grad_enabled() else 0)
            )
        )
    config = PPOConfig(
        iterations=1, num_envs=16, steps_per_iteration=4, epochs=3, minibatch_size=1000
    )
    from pvg_pipeline.pvg.trainers import ppo as ppo_module

    if path == "plain":
        monkeypatch.setattr(ppo_module, "make_updaters", lambda *args: {})
    seen = {}
    original = ppo_module.collect

    def spy(*args):
        experience = original(*args)
        active = experience.data["active"]
        seen.update({i: int(active[..., i].sum()) for i in range(active.shape[-1])})
        return experience

    monkeypatch.setattr(ppo_module, "collect", spy)
    train_ppo(agents, protocol, Rewards(), train, config, 0, CPU, progress=False)
    assert rows == {"prover": 3 * seen[0], "verifier": 3 * seen[1]}
    assert 0 < seen[0] < 64 and 0 < seen[1] < 64


def test_training_on_the_cpu_keeps_freed_memory(easy, monkeypatch):
    from pvg_pipeline.pvg.trainers import ppo as ppo_module

    train, _ = easy
    protocol = build_protocol("pvg", max_message_rounds=4)
    agents = build_agents(protocol, TINY, TINY, 8)
    config = PPOConfig(iterations=1, num_envs=8, steps_per_iteration=4, epochs=1)
    retained = []
    monkeypatch.setattr(ppo_module, "retain_freed_memory", lambda: retained.append(1))
    train_ppo(agents, protocol, Rewards(), train, config, 0, CPU, progress=False)
    assert retained == [1]


def test_the_seed_sets_the_initial_weights(easy, tmp_path, monkeypatch):
    """Same seed, same initial weights; another seed, other initial weights."""
    initial = []

    def record(agents, *args, **kwargs):
        initial.append(_weights(agents))
        return []

    monkeypatch.setattr("pvg_pipeline.pvg.trainers.run.train_ppo", record)
    train, _ = easy
    for seed in (0, 0, 1):
        _run(train, tmp_path, 1, seed=seed)
    first, again, other = initial
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_periodic_evaluation_rows(easy, tmp_path):
    """Every eval_interval iterations and at the last: the test split's metrics
    and the update diagnostics; other rows have neither."""
    train, test = easy
    protocol = build_protocol("pvg", max_message_rounds=4)
    config = PPOConfig(
        iterations=5, num_envs=8, steps_per_iteration=4, epochs=1, minibatch_size=8
    )
    agents = build_agents(protocol, TINY, TINY, 8)
    history = train_ppo(
        agents,
        protocol,
        Rewards(),
        train,
        replace(config, eval_interval=2),
        0,
        CPU,
        progress=False,
        evaluation_pairs=test,
    )
    evaluated = [row["iteration"] for row in history if "test_accuracy" in row]
    assert evaluated == [2, 4, 5]
    row = history[-1]
    assert 0.0 <= row["test_accuracy"] <= 1.0
    # The easy split has non-isomorphic pairs of WL score 1 only.
    assert 0.0 <= row["test_accuracy_wl1"] <= 1.0
    assert math.isnan(row["test_accuracy_wl3plus"])
    assert math.isnan(row["test_hard_balanced_accuracy"])
    for name in ("prover", "verifier"):
        assert row[f"approx_kl_{name}"] >= 0.0
        assert 0.0 <= row[f"clip_fraction_{name}"] <= 1.0
        assert row[f"explained_variance_{name}"] <= 1.0
    assert "approx_kl_verifier" not in history[0]


def test_periodic_evaluation_does_not_change_training(easy):
    """How often a run evaluates is not part of its identity (resume allows
    changing it): evaluating every iteration trains the same weights as never."""
    train, test = easy
    protocol = build_protocol("pvg", max_message_rounds=4)
    config = PPOConfig(
        iterations=4, num_envs=8, steps_per_iteration=4, epochs=2, minibatch_size=8
    )
    trained = []
    for interval in (1, 100):
        torch.manual_seed(0)
        agents = build_agents(protocol, TINY, TINY, 8)
        train_ppo(
            agents,
            protocol,
            Rewards(),
            train,
            replace(config, eval_interval=interval),
            0,
            CPU,
            progress=False,
            evaluation_pairs=test,
        )
        trained.append(_weights(agents))
    first, second = trained
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_settings_newer_than_a_checkpoint_resume_when_they_mean_what_it_did(tmp_path):
    from types import SimpleNamespace

    old = {
        "agents": {"verifier": {"architecture": {"d_gnn": 16}}},
        "trainer": {"gamma": 0.95},
    }
    new = {
        "agents": {
            "verifier": {
                "architecture": {"d_gnn": 16, "observation_normalisation": False}
            }
        },
        "trainer": {"gamma": 0.95, "observation_normalisation_steps": 500},
    }
    saved = SimpleNamespace(fingerprint=old, iteration=500)
    off = CheckpointStore(tmp_path, new)
    off._check(saved)  # off (as before) and any number of steps: resumes
    assert off.adjusted == {}
    new["agents"]["verifier"]["architecture"]["observation_normalisation"] = True
    with pytest.raises(ValueError, match="observation_normalisation was None, now"):
        CheckpointStore(tmp_path, new)._check(saved)
