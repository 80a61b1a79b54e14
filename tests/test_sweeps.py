"""Sweeps (local pool and real local Ray) and the Python API."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from pvg_pipeline.params import ParameterError
from pvg_pipeline.sweeps.definition import load_sweep


def _kedro(root, *args, timeout=600):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-m", "kedro", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def project_with_data(project_copy):
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, env="test") as session:
        session.run(pipeline_names=["data_generation"])
    return project_copy


def _results(root, sweep="grid"):
    folder = root / "data/08_reporting/sweeps/test" / sweep / "results.csv"
    versions = sorted(folder.iterdir())
    return [pd.read_csv(v / "results.csv") for v in versions]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "ray"])
def test_two_by_two_grid(project_with_data, backend):
    root = project_with_data
    result = _kedro(
        root,
        "sweep",
        "--env",
        "test",
        "--sweep",
        "grid",
        "--backend",
        backend,
        "--max-parallel",
        "2",
        "--num-cpus",
        "2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sweep grid: 4 completed, 0 failed" in result.stdout
    (table,) = _results(root)
    assert len(table) == 4
    assert set(zip(table["seed"], table["protocol.name"], strict=True)) == {
        (0, "pvg"),
        (0, "debate"),
        (1, "pvg"),
        (1, "debate"),
    }
    assert (table["status"] == "completed").all()
    assert table["accuracy"].between(0, 1).all()
    # Each trial has its own versioned outputs, tagged with sweep and trial id.
    assert len(set(table["agents_version"])) == 4
    metrics_dir = root / "data/08_reporting/evaluation_metrics.json"
    tags = set()
    for version in metrics_dir.iterdir():
        metrics = json.loads((version / "evaluation_metrics.json").read_text())
        tags.add((metrics["experiment"]["sweep"], metrics["experiment"]["trial"]))
        assert metrics["versions"]["agents"] == version.name  # its own agents
    assert tags == {("grid", t) for t in table["trial_id"]}


@pytest.mark.slow
def test_failed_trial_is_recorded_and_rerun_alone(project_with_data):
    root = project_with_data
    (root / "conf/test/sweeps/flaky.yml").write_text(
        "trials:\n  - {seed: 0}\n  - {seed: 1}\n  - {seed: 2, device: 'cuda:7'}\n"
    )
    first = _kedro(
        root, "sweep", "--env", "test", "--sweep", "flaky", "--max-parallel", "2"
    )
    assert first.returncode == 1
    assert "2 completed, 1 failed" in first.stdout
    (table,) = _results(root, "flaky")
    failed = table[table["status"] == "failed"]
    assert failed["seed"].tolist() == [2]
    assert "CUDA is not available" in failed["error"].iloc[0]
    state = root / "data/08_reporting/sweeps/test/flaky/trials"
    before = {p.name: p.stat().st_mtime_ns for p in state.iterdir()}
    second = _kedro(
        root, "sweep", "--env", "test", "--sweep", "flaky", "--max-parallel", "2"
    )
    after = {p.name: p.stat().st_mtime_ns for p in state.iterdir()}
    changed = [name for name in before if before[name] != after[name]]
    assert changed == [f"{failed['trial_id'].iloc[0]}.json"]  # only the failed one ran
    assert second.returncode == 1
    assert len(_results(root, "flaky")) == 2


def test_unknown_parameter_path_fails_before_anything_runs(tmp_path):
    conf = tmp_path / "conf"
    (conf / "base" / "sweeps").mkdir(parents=True)
    (conf / "base" / "sweeps" / "bad.yml").write_text("grid:\n  protocol.nmae: [pvg]\n")
    with pytest.raises(ParameterError, match=r"protocol: unknown key\(s\) 'nmae'"):
        load_sweep(conf, "base", "bad", {})
    (conf / "base" / "sweeps" / "range.yml").write_text("grid:\n  seed: [-1]\n")
    with pytest.raises(ParameterError, match="seed = -1"):
        load_sweep(conf, "base", "range", {})
    with pytest.raises(ParameterError, match="sweep 'absent' not found"):
        load_sweep(conf, "base", "absent", {})


@pytest.mark.slow
def test_run_experiment_equals_kedro_run(project_with_data):
    from pvg_pipeline import Parameters, ScenarioType, TrainerType, run_experiment

    root = project_with_data
    params = Parameters(
        ScenarioType.GRAPH_ISOMORPHISM,
        TrainerType.PPO,
        "test",
        protocol={"name": "debate"},
        seed=5,
    )
    assert params.resolved.protocol.name == "debate"
    api = run_experiment(params, device="cpu", project_path=root)
    cli = _kedro(
        root,
        "run",
        "--env",
        "test",
        "--pipelines",
        "train,evaluate",
        "--params",
        "protocol.name=debate,seed=5,device=cpu",
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    metrics_dir = root / "data/08_reporting/evaluation_metrics.json"
    latest = sorted(metrics_dir.iterdir())[-1]
    from_cli = json.loads((latest / "evaluation_metrics.json").read_text())
    for key in ("accuracy", "completeness", "soundness", "mean_rounds", "timeout_rate"):
        assert api["metrics"][key] == from_cli[key], key
    with pytest.raises(ParameterError, match="protocol.name = 'chess'"):
        Parameters("graph_isomorphism", "ppo", "test", protocol={"name": "chess"})
