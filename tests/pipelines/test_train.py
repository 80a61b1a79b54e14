"""The train pipeline through a real Kedro session and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib import metadata

import pandas as pd
import pytest
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from pvg_pipeline.accelerate.cpu.kernels import load_extension
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import import_agents


def _versions(root, name):
    return sorted((root / "data" / name).iterdir())


@pytest.mark.slow
def test_train_reuses_the_latest_dataset_and_saves_versioned_outputs(project_copy):
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, env="test") as session:
        session.run(pipeline_names=["data_generation"])
    for trainer in ("ppo", "solo_agent"):
        with KedroSession.create(
            project_path=project_copy,
            env="test",
            runtime_params={"trainer": {"name": trainer}},
        ) as session:
            session.run(pipeline_names=["train"])
    # Training never regenerated the data.
    assert len(_versions(project_copy, "03_primary/graph_pairs_train.pt")) == 1
    agents_versions = _versions(project_copy, "06_models/agents.pt")
    assert len(agents_versions) == 2
    exported = torch.load(agents_versions[0] / "agents.pt", weights_only=True)
    assert exported["trainer"] == "ppo" and exported["max_nodes"] == 8
    agents = import_agents(exported)
    assert set(agents) == {"prover", "verifier"}
    history = pd.read_csv(
        _versions(project_copy, "08_reporting/training_history.csv")[0]
        / "training_history.csv"
    )
    assert history["iteration"].tolist() == [1, 2]
    assert {"verifier_accuracy", "reward_prover", "value_loss_verifier"} <= set(history)
    record = json.loads(
        (
            _versions(project_copy, "06_models/training_run.json")[1]
            / "training_run.json"
        ).read_text()
    )
    assert record["parameters"]["trainer"]["name"] == "solo_agent"
    assert record["packages"]["torch"] == metadata.version("torch")
    assert record["datasets"]["graph_pairs_train"]["seed"] == 1
    # Which code ran: the fused CPU kernels, or why not.
    kernels = "on" if load_extension() is not None else "off: they could not be built"
    assert record["acceleration"]["cpu_kernels"] == kernels
    ppo_record = json.loads(
        (
            _versions(project_copy, "06_models/training_run.json")[0]
            / "training_run.json"
        ).read_text()
    )
    assert ppo_record["execution"] == {
        "policy": "MultiAgentPolicy",
        "advantages": "eager",
        "update": "fixed shape",
    }
    assert ppo_record["acceleration"] == {
        "cpu_kernels": kernels,
        "switched_off": [],
        **({"not_covered": []} if kernels == "on" else {}),
    }


@pytest.mark.slow
def test_train_without_data_tells_the_user_what_to_run(project_copy):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--pipeline", "train", "--env", "test"],
        capture_output=True,
        text=True,
        env=env,
        cwd=project_copy,
        timeout=120,
    )
    assert result.returncode != 0
    assert (
        "dataset 'graph_pairs_train' has no saved version to load; run "
        "`kedro run --pipelines data_generation --env test` first" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_dataset_padded_to_other_sizes_is_refused():
    import torch as _torch

    from pvg_pipeline.params import ProjectParameters
    from pvg_pipeline.pipelines.evaluate.nodes import check_max_nodes
    from pvg_pipeline.pipelines.train.nodes import check_dataset_matches

    pairs = {
        "adjacency": _torch.zeros(3, 2, 9, 9, dtype=_torch.bool),
        "sizes": _torch.full((3,), 9),
        "wl_scores": _torch.tensor([1, 2, -1]),
        "is_isomorphic": _torch.tensor([False, False, True]),
    }
    with pytest.raises(
        ValueError, match="graph_pairs_train has max_nodes=9 but .* max_nodes=11"
    ):
        check_dataset_matches(pairs, ProjectParameters(), "graph_pairs_train")
    with pytest.raises(ValueError, match="it lacks adjacency, sizes.*it has x"):
        check_dataset_matches({"x": 1}, ProjectParameters(), "graph_pairs_train")
    short = {**pairs, "sizes": _torch.full((2,), 9)}
    with pytest.raises(ValueError, match="different lengths .*sizes: 2"):
        check_dataset_matches(short, ProjectParameters(), "graph_pairs_train")
    with pytest.raises(
        ValueError,
        match="trained on graphs padded to 11 nodes but graph_pairs_test has 9",
    ):
        check_max_nodes({"max_nodes": 11}, pairs)
    check_max_nodes({"max_nodes": 9}, pairs)  # matching sizes pass


def test_missing_inputs_name_the_pipeline_that_writes_them(project_copy):
    from pvg_pipeline.hooks import producer

    bootstrap_project(project_copy)
    assert producer("graph_pairs_train") == "data_generation"
    assert producer("agents") == "train"
    assert producer("evaluation_metrics_versions") == "evaluate"


def _cli(root, *args, **environment):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "WANDB_MODE": "disabled"}
    env.pop("PVG_DEBUG", None)
    env |= environment
    return subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--env", "test", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
    )


@pytest.mark.slow
def test_known_failures_are_one_line_with_the_traceback_in_a_file(project_copy):
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, env="test") as session:
        session.run(pipeline_names=["data_generation"])
    (version,) = _versions(project_copy, "03_primary/graph_pairs_train.pt")

    malformed = _cli(project_copy, "--pipelines", "train", "--load-versions", "x")
    assert malformed.returncode != 0
    errors = [e for e in malformed.stderr.splitlines() if e.startswith("Error:")]
    assert errors == [
        "Error: Expected the form of 'load_versions' to be "
        "'dataset_name:YYYY-MM-DDThh.mm.ss.sssZ',found x instead"
    ]
    assert "NoneType" not in malformed.stderr + malformed.stdout

    unknown = _cli(
        project_copy,
        "--pipelines",
        "train",
        "--load-versions",
        "graph_pairs_train:2020-01-01T00.00.00.000Z",
    )
    assert unknown.returncode != 0
    assert "no such version; newest versions: " + version.name in unknown.stderr

    misspelt = _cli(project_copy, "--pipeline", "trian")
    assert misspelt.returncode != 0
    assert "Traceback" not in misspelt.stderr + misspelt.stdout
    assert (
        "Error: unknown pipeline 'trian'; the pipelines are: compare, "
        "data_generation, evaluate, train" in misspelt.stderr
    )

    # A truncated dataset: one line naming the file, the traceback in the log.
    data = version / "graph_pairs_train.pt"
    data.write_bytes(data.read_bytes()[:200])
    broken = _cli(project_copy, "--pipelines", "train")
    assert broken.returncode != 0
    assert "Traceback" not in broken.stderr + broken.stdout
    errors = [e for e in broken.stderr.splitlines() if e.startswith("Error:")]
    assert len(errors) == 1
    assert f"'{data}' is not a readable torch file" in errors[0]
    log = (project_copy / "logs/last_error.log").read_text()
    assert log.startswith("Traceback") and "DatasetError" in log
    assert not (project_copy / "data/06_models/agents.pt").exists()


@pytest.mark.slow
def test_online_tracking_without_a_server_logs_offline(project_copy):
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, env="test") as session:
        session.run(pipeline_names=["data_generation"])
    started = time.monotonic()
    run = _cli(
        project_copy,
        "--pipelines",
        "train",
        "--params",
        "tracking.mode=online,tracking.init_timeout=3",
        WANDB_MODE="",  # the parameter decides
        WANDB_API_KEY="a" * 40,
        WANDB_BASE_URL="http://127.0.0.1:9",  # nothing listens there
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "W&B could not be reached" in run.stdout + run.stderr
    assert time.monotonic() - started < 120
    assert list((project_copy / "wandb").glob("offline-run-*"))
    assert "Run summary" not in run.stdout + run.stderr  # quiet at the end
