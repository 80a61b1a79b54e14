"""What the W&B hook sends: grouped names, sweep groups, the evaluation."""

from __future__ import annotations

import sys
from types import SimpleNamespace

from kedro.io.core import Version

from pvg_pipeline import tracking
from pvg_pipeline.datasets import TorchDataset
from pvg_pipeline.hooks import TrackingHook
from pvg_pipeline.tracking import grouped_name


def test_history_columns_are_grouped_by_agent_or_split():
    assert grouped_name("policy_loss_prover") == "prover/policy_loss"
    assert grouped_name("entropy_prover1") == "prover1/entropy"
    assert grouped_name("approx_kl_verifier") == "verifier/approx_kl"
    assert grouped_name("test_accuracy_wl3plus") == "test/accuracy_wl3plus"
    assert grouped_name("verifier_accuracy") == "train/verifier_accuracy"
    assert grouped_name("iteration") == "iteration"


class _FakeRun:
    def __init__(self, **kwargs):
        self.init = kwargs
        self.logged, self.summary, self.finished = [], {}, None

    def log(self, metrics):
        self.logged.append(metrics)

    def finish(self, exit_code):
        self.finished = exit_code


def test_a_sweep_trial_is_grouped_named_and_gets_its_evaluation(monkeypatch):
    runs = []

    def init(**kwargs):
        runs.append(_FakeRun(**kwargs))
        return runs[-1]

    monkeypatch.setitem(sys.modules, "wandb", SimpleNamespace(init=init, Settings=dict))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    parameters = {
        "tracking": {"mode": "offline"},
        "experiment": {"sweep": "learning", "trial": "t003-1a2b3c4d"},
    }
    hook = TrackingHook()
    hook.before_pipeline_run(
        {"env": "gi_ppo"},
        SimpleNamespace(nodes=[SimpleNamespace(name="train_agents")]),
        SimpleNamespace(load=lambda name: parameters),
    )
    (run,) = runs
    assert (run.init["group"], run.init["name"]) == ("learning", "t003-1a2b3c4d")
    assert run.init["tags"] == ["gi_ppo"]
    tracking.publish({"iteration": 1, "value_loss_verifier": 0.5})
    assert run.logged == [{"iteration": 1, "verifier/value_loss": 0.5}]
    hook.after_node_run(
        SimpleNamespace(name="evaluate_agents"),
        {"evaluation_metrics": {"accuracy": 0.9, "protocol": "pvg", "x": True}},
    )
    assert run.summary == {"evaluation/accuracy": 0.9}
    hook.after_pipeline_run()
    assert run.finished == 0
    tracking.publish({"iteration": 2})  # no longer listening
    assert len(run.logged) == 1


def test_the_trained_agents_become_a_model_artifact(monkeypatch, tmp_path):
    import torch

    runs, artifacts = [], []

    class Artifact:
        def __init__(self, name, type, metadata):
            self.name, self.type, self.metadata, self.files = name, type, metadata, {}
            artifacts.append(self)

        def add_file(self, path, name):  # W&B copies the file here
            self.files[name] = torch.load(path, weights_only=True)

    def init(**kwargs):
        runs.append(_FakeRun(**kwargs))
        runs[-1].log_artifact = lambda artifact: runs[-1].logged.append(artifact)
        return runs[-1]

    wandb = SimpleNamespace(init=init, Settings=dict, Artifact=Artifact)
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    hook = TrackingHook()
    hook.after_dataset_saved("agents", {"trainer": "ppo"}, None)  # no run yet
    assert artifacts == []
    version = "2026-01-01T00.00.00.000Z"
    saved = TorchDataset(
        filepath=str(tmp_path / "agents.pt"), version=Version(None, version)
    )
    catalog = SimpleNamespace(
        load=lambda name: {"tracking": {"mode": "offline"}},
        get=lambda name: {"agents": saved}[name],
    )
    hook.before_pipeline_run(
        {"env": "gi_ppo", "run_id": version},
        SimpleNamespace(nodes=[SimpleNamespace(name="train_agents")]),
        catalog,
    )
    agents = {"trainer": "ppo", "seed": 3, "verifier": {"w": torch.ones(2)}}
    saved.save(agents)  # as the catalog does, before the hook
    hook.after_dataset_saved("training_history", {}, None)
    hook.after_dataset_saved("agents", agents, None)
    (artifact,) = artifacts
    assert (artifact.name, artifact.type) == ("agents-gi_ppo", "model")
    assert artifact.metadata == {
        "dataset_version": "2026-01-01T00.00.00.000Z",
        "environment": "gi_ppo",
        "trainer": "ppo",
        "seed": 3,
        "max_nodes": None,
    }
    assert torch.equal(artifact.files["agents.pt"]["verifier"]["w"], torch.ones(2))
    assert runs[0].logged == [artifact]
    hook.after_pipeline_run()
