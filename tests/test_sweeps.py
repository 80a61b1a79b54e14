"""Sweeps (local pool and real local Ray) and the Python API."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from pvg_pipeline.params import ParameterError
from pvg_pipeline.sweeps.definition import (
    load_sweep,
    parameters_fingerprint,
    select_trials,
)
from pvg_pipeline.sweeps.runner import SweepPlan
from tests.conftest import PROJECT


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
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "sweep grid: 4 completed, 0 failed" in result.stdout
    # Each trial's output goes to its own log; the console has one line per trial.
    logs = sorted((root / "data/08_reporting/sweeps/test/grid/logs").glob("*.log"))
    assert len(logs) == 4
    assert all("train_agents" in log.read_text() for log in logs)
    console = result.stdout + result.stderr
    assert "train_agents" not in console
    assert sum(" completed (log: " in line for line in console.splitlines()) == 4
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


def test_a_larger_budget_continues_completed_trials(tmp_path):
    """The PPO budget is not part of a trial's identity; a trial completed with a
    smaller budget than asked for is pending again (it resumes its checkpoint)."""
    conf = tmp_path / "conf"
    (conf / "base" / "sweeps").mkdir(parents=True)
    (conf / "base" / "sweeps" / "staged.yml").write_text(
        "common:\n  trainer.ppo.iterations: 2000\ngrid:\n  seed: [0, 1]\n"
    )
    _, full = load_sweep(conf, "base", "staged", {})
    _, short = load_sweep(conf, "base", "staged", {}, iterations=500)
    assert [t.trial_id for t in full] == [t.trial_id for t in short]
    assert [t.overrides["trainer.ppo.iterations"] for t in short] == [500, 500]

    def plan(trials):
        return SweepPlan(
            tmp_path, "base", "staged", trials, ["train"], tmp_path, tmp_path
        )

    record = {"status": "completed", "overrides": short[0].overrides}
    (tmp_path / f"{short[0].trial_id}.json").write_text(json.dumps(record))
    assert plan(short).pending() == [short[1]]
    assert plan(full).pending() == full  # 500 reached, 2000 asked for


def test_parameters_fingerprint_ignores_the_budget_and_tags_only():
    tree = {"seed": 0, "trainer": {"ppo": {"iterations": 500, "learning_rate": 3e-4}}}
    longer = {**tree, "trainer": {"ppo": {"iterations": 2000, "learning_rate": 3e-4}}}
    tagged = {**tree, "experiment": {"sweep": "learning", "trial": "t000"}}
    other = {**tree, "trainer": {"ppo": {"iterations": 500, "learning_rate": 1e-3}}}
    assert parameters_fingerprint(tree) == parameters_fingerprint(longer)
    assert parameters_fingerprint(tree) == parameters_fingerprint(tagged)
    assert parameters_fingerprint(tree) != parameters_fingerprint(other)
    assert tree["trainer"]["ppo"]["iterations"] == 500  # the input is not changed


def test_trials_selects_positions_and_leaves_the_others(tmp_path):
    conf = tmp_path / "conf"
    (conf / "base" / "sweeps").mkdir(parents=True)
    (conf / "base" / "sweeps" / "five.yml").write_text(
        "grid:\n  seed: [0, 1, 2, 3, 4]\n"
    )
    _, trials = load_sweep(conf, "base", "five", {})
    ids = [t.trial_id for t in trials]
    assert select_trials("0-1,4", trials) == {ids[0], ids[1], ids[4]}
    assert select_trials(" 3 ", trials) == {ids[3]}
    for spec, message in [
        ("5", "outside the sweep's 5 trials"),
        ("3-1", "outside"),
        ("a", "'a' is not a position"),
        ("0,,1", "'' is not a position"),
    ]:
        with pytest.raises(ParameterError, match=message):
            select_trials(spec, trials)
    plan = SweepPlan(
        tmp_path,
        "base",
        "five",
        trials,
        ["train"],
        tmp_path,
        tmp_path,
        selected=select_trials("1-2", trials),
    )
    (tmp_path / f"{ids[1]}.json").write_text(
        json.dumps({"status": "completed", "overrides": trials[1].overrides})
    )
    assert plan.pending() == [trials[2]]  # 1 is done; 0, 3 and 4 not selected
    assert plan.completed() == 1


@pytest.mark.slow
def test_run_experiment_equals_kedro_run(project_with_data, capfd):
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
    capfd.readouterr()
    api = run_experiment(params, device="cpu", project_path=root)
    printed = capfd.readouterr()
    # Quiet by default: no per-dataset log lines in a notebook.
    assert "Loading data from" not in printed.out + printed.err
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


def _set_parameters(root, **ppo):
    """Change ``trainer.ppo`` keys in the test environment's own configuration."""
    path = root / "conf/test/parameters_train.yml"
    conf = yaml.safe_load(path.read_text())
    conf["trainer"]["ppo"].update(ppo)
    path.write_text(yaml.safe_dump(conf))


def _latest(root, dataset, name):
    folder = root / "data" / dataset
    return sorted(folder.iterdir())[-1] / name


@pytest.mark.slow
def test_interrupted_trial_resumes_from_its_own_checkpoint(project_with_data):
    root = project_with_data
    sweeps = root / "conf/test/sweeps"
    (sweeps / "long.yml").write_text("trials:\n  - {seed: 0}\npipelines: [train]\n")
    (sweeps / "straight.yml").write_text("trials:\n  - {seed: 0}\npipelines: [train]\n")
    args = ("sweep", "--env", "test", "--max-parallel", "1", "--sweep")
    # A 2-iteration trial stands for one stopped after its second checkpoint (the
    # test environment checkpoints every iteration); its record is then lost, as
    # when the worker is killed.
    first = _kedro(root, *args, "long")
    assert first.returncode == 0, first.stderr[-3000:]
    (table,) = _results(root, "long")
    trial = table["trial_id"].iloc[0]
    folder = root / "data/06_models/checkpoints/sweeps/test/long" / trial
    (run,) = folder.iterdir()
    assert sorted(p.name for p in run.iterdir()) == [
        "iteration_0000001.pt",
        "iteration_0000002.pt",
    ]
    # A sweep of the train pipeline only has no metrics to compare, yet a plot.
    assert (table["control"].iloc[0], table["iterations"].iloc[0]) == ("none", 2)
    assert (table["protocol"].iloc[0], table["seed"].iloc[0]) == ("pvg", 0)
    assert (
        len(
            list((root / "data/08_reporting/sweeps/test/long/comparison.png").iterdir())
        )
        == 1
    )
    state = root / "data/08_reporting/sweeps/test/long/trials" / f"{trial}.json"
    state.unlink()

    # Re-run with a larger budget: iterations are not part of the fingerprint.
    _set_parameters(root, iterations=4)
    second = _kedro(root, *args, "long")
    assert second.returncode == 0, second.stderr[-3000:]
    record = json.loads(state.read_text())
    assert record["resumed_from_iteration"] == 2
    assert record["resumed_run"] == run.name
    assert _results(root, "long")[-1]["resumed_from_iteration"].tolist() == [2]
    assert [p.name for p in folder.iterdir()] == [run.name]  # the same run folder
    assert len(list(run.iterdir())) == 4
    training_run = json.loads(
        _latest(root, "06_models/training_run.json", "training_run.json").read_text()
    )
    assert training_run["resumed_from_iteration"] == 2
    assert training_run["checkpoint_dir"] == str(run)
    resumed_agents = torch.load(
        _latest(root, "06_models/agents.pt", "agents.pt"), weights_only=True
    )
    resumed = pd.read_csv(
        _latest(root, "08_reporting/training_history.csv", "training_history.csv")
    )
    assert resumed["iteration"].tolist() == [1, 2, 3, 4]
    assert (
        _latest(root, "08_reporting/training_curves.png", "training_curves.png")
    ).stat().st_size > 10_000

    # The same trial trained in one go: same weights, same history.
    straight = _kedro(root, *args, "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    agents = torch.load(
        _latest(root, "06_models/agents.pt", "agents.pt"), weights_only=True
    )
    for name, entry in agents["agents"].items():
        weights = resumed_agents["agents"][name]["state_dict"]
        assert entry["state_dict"].keys() == weights.keys()
        for key, tensor in entry["state_dict"].items():
            assert torch.equal(tensor, weights[key]), (name, key)
    history = pd.read_csv(
        _latest(root, "08_reporting/training_history.csv", "training_history.csv")
    )
    timing = [c for c in history if c == "frames_per_second"]
    pd.testing.assert_frame_equal(
        history.drop(columns=timing), resumed.drop(columns=timing)
    )

    # Other parameters than the checkpoint's: the trial fails and says why.
    state.unlink()
    _set_parameters(root, iterations=6, gamma=0.9)
    third = _kedro(root, *args, "long")
    assert third.returncode == 1
    error = json.loads(state.read_text())["error"]
    assert "cannot resume from" in error
    assert "trainer.gamma was 0.95, now 0.9" in error
    assert f"move {run} away to train from scratch" in error
    assert len(list(run.iterdir())) == 4  # nothing was overwritten or added


@pytest.mark.slow
def test_learning_results_of_a_tiny_sweep(project_with_data, tmp_path):
    root = project_with_data
    (root / "conf/test/sweeps/learn.yml").write_text(
        "common: {trainer.ppo.iterations: 3}\n"
        "trials:\n"
        "  - {seed: 0}\n"
        "  - {seed: 0, agents.prover.type: random}\n"
        "  - {seed: 0, trainer.name: solo_agent, trainer.solo_agent.epochs: 2}\n"
    )
    swept = _kedro(root, "sweep", "--env", "test", "--sweep", "learn")
    assert swept.returncode == 0, swept.stderr[-3000:]
    (sweep_table,) = _results(root, "learn")
    assert sweep_table["control"].tolist() == [
        "none",
        "random_prover",
        "solo_supervised",
    ]
    assert sweep_table["iterations"].tolist() == [3, 3, 2]

    def report(out, *extra):
        done = subprocess.run(
            [
                sys.executable,
                str(PROJECT / "scripts/learning_results.py"),
                "--env",
                "test",
                "--sweep",
                "learn",
                "--out-dir",
                str(out),
                "--project",
                str(root),
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return (
            pd.read_csv(out / "results/learning.csv"),
            (out / "results.md").read_text(),
        )

    table, page = report(tmp_path / "done")
    assert table["control"].tolist() == sweep_table["control"].tolist()
    assert (table["status"] == "completed").all()
    assert (table["final_source"] == "evaluation").all()
    assert table["iterations"].tolist() == [3, 3, 2]
    assert table["evaluations"].tolist() == [3, 3, 2]  # eval_interval 1 in test
    # The final columns are the trials' own evaluations, as in the sweep table.
    assert table["test_accuracy"].tolist() == sweep_table["accuracy"].tolist()
    assert (tmp_path / "done/results/learning.png").stat().st_size > 10_000
    assert "(a) pvg reaches" in page
    assert "0 of 1 pvg seeds" in page or "1 of 1 pvg seeds" in page
    assert "vs solo_ppo: not yet measured" in page
    assert page.count("| 0 | completed |") == 3  # seed 0, one row per trial
    assert "One change at a time" not in page  # the test env has no such sweep

    # A one-change sweep is compared with the pvg trial of the same seed.
    (root / "conf/test/sweeps/change.yml").write_text(
        "common: {trainer.ppo.iterations: 3}\n"
        "trials:\n"
        "  - {seed: 0, trainer.ppo.value_coefficient: 1.0}\n"
    )
    changed = _kedro(root, "sweep", "--env", "test", "--sweep", "change")
    assert changed.returncode == 0, changed.stderr[-3000:]
    _, page = report(tmp_path / "change", "--changes-sweep", "change")
    changes = pd.read_csv(tmp_path / "change/results/change.csv")
    assert changes["change"].tolist() == [
        "baseline (no change)",
        "trainer.ppo.value_coefficient=1.0",
    ]
    assert changes["compared_at"].tolist() == [3, 3]
    assert changes["trial_id"].iloc[0] == sweep_table["trial_id"].iloc[0]
    assert changes["test_accuracy"].notna().all()
    assert "## One change at a time" in page and "iteration 3" in page

    # The pvg trial stopped mid-way: no record, no saved outputs, checkpoints only.
    pvg = sweep_table["trial_id"].iloc[0]
    (root / f"data/08_reporting/sweeps/test/learn/trials/{pvg}.json").unlink()
    version = sweep_table["agents_version"].iloc[0]
    for folder in (root / "data").glob(f"*/*/{version}"):
        shutil.rmtree(folder)
    table, page = report(tmp_path / "midway")
    row = table.iloc[0]
    assert row["status"] == "running or interrupted"
    assert row["history_source"] == "checkpoint iteration_0000003.pt"
    assert (row["final_source"], row["iterations"]) == ("periodic", 3)
    assert "seed 0: 3 (running or interrupted)" in page

    # The runs are gone (another checkout): the recorded files keep every trial.
    shutil.copytree(tmp_path / "done", tmp_path / "kept")
    for folder in ("06_models", "07_model_output", "08_reporting"):
        shutil.rmtree(root / "data" / folder, ignore_errors=True)
    unrecorded, _ = report(tmp_path / "empty")
    assert (unrecorded["iterations"] == 0).all()  # nothing left in the project
    table, page = report(tmp_path / "kept")
    recorded = pd.read_csv(tmp_path / "done/results/learning.csv")
    pd.testing.assert_frame_equal(table, recorded)
    curves = pd.read_csv(tmp_path / "kept/results/learning_curves.csv")
    assert curves.groupby("trial_id").size().tolist() == [3, 3, 2]
    assert page.count("| 0 | completed |") == 3


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_sigterm_stops_the_trials_too(project_with_data):
    root = project_with_data
    (root / "conf/test/sweeps/endless.yml").write_text(
        "trials:\n  - {seed: 0}\npipelines: [train]\n"
    )
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "WANDB_MODE": "disabled"}
    sweep = subprocess.Popen(
        [sys.executable, "-m", "kedro", "sweep", "--env", "test"]
        + ["--sweep", "endless", "--max-parallel", "1", "--iterations", "100000"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoints = root / "data/06_models/checkpoints/sweeps/test/endless"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("*/*/iteration_*.pt")):
        assert sweep.poll() is None and time.monotonic() < deadline
        time.sleep(0.5)
    children = Path(f"/proc/{sweep.pid}/task/{sweep.pid}/children").read_text()
    workers = [int(pid) for pid in children.split()]
    assert workers and all(_alive(pid) for pid in workers)
    sweep.send_signal(signal.SIGTERM)
    out, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == 130
    assert "interrupted" in out and "re-run the same command to resume" in out
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_alive(pid) for pid in workers)  # no trial trains on, orphaned


def test_sessions_started_in_the_same_millisecond_get_distinct_ids(
    project_copy, monkeypatch
):
    """Two trials starting together once saved into the same version folders."""
    import kedro.framework.session.session as kedro_session

    from pvg_pipeline.sweeps.trials import new_session

    bootstrap_project(project_copy)
    stamps = iter(["2026-01-01T00.00.00.000Z"] * 3 + ["2026-01-01T00.00.00.001Z"])
    monkeypatch.setattr(kedro_session, "generate_timestamp", lambda: next(stamps))
    first = new_session(project_copy, "test", {})
    second = new_session(project_copy, "test", {})
    assert first.session_id == "2026-01-01T00.00.00.000Z"
    assert second.session_id == "2026-01-01T00.00.00.001Z"
    first.close()
    second.close()


@pytest.mark.parametrize(
    "path",
    sorted((PROJECT / "conf").glob("*/sweeps/*.yml")),
    ids=lambda path: f"{path.parents[1].name}/{path.stem}",
)
def test_every_committed_sweep_is_valid(path):
    """Each sweep in conf/ loads, and every trial's parameters pass the checks."""
    from pvg_pipeline.config import load_parameters

    env = path.parents[1].name
    base = load_parameters(env, PROJECT / "conf")
    _, trials = load_sweep(PROJECT / "conf", env, path.stem, base)
    assert trials
    assert len({t.trial_id for t in trials}) == len(trials)
