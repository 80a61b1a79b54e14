"""Evaluate and compare pipelines through real Kedro sessions."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import pandas as pd
import pytest
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from pvg_pipeline.pipelines.evaluate.nodes import evaluate_agents
from pvg_pipeline.pvg.evaluation import LEARNING_METRICS
from pvg_pipeline.pvg.graphs.generation import GenerationSpec, generate_graph_pairs
from pvg_pipeline.pvg.protocols import build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import AgentArchitecture
from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import (
    AgentSpec,
    build_agents,
    export_agents,
)

TINY = AgentSpec(
    architecture=AgentArchitecture(
        num_gnn_layers=1, d_gnn=8, d_gin_mlp=16, d_transformer=8, d_transformer_mlp=16
    )
)
MESSAGE_STATISTICS = (
    "prover_answers",
    "prover_answer_other_graph",
    "prover_answer_same_wl_colour",
    "prover_answer_same_wl_colour_other_graph",
)


def _run(root, pipeline, **kwargs):
    runtime = kwargs.pop("runtime_params", None)
    with KedroSession.create(
        project_path=root, env="test", runtime_params=runtime
    ) as session:
        session.run(pipeline_names=[pipeline], **kwargs)


def _versions(root, name):
    return sorted(p.name for p in (root / "data" / name).iterdir())


@pytest.mark.slow
def test_pinned_older_agents_are_evaluated_and_runs_compared(project_copy):
    bootstrap_project(project_copy)
    _run(project_copy, "data_generation")
    _run(project_copy, "train", runtime_params={"seed": 11})
    _run(project_copy, "train", runtime_params={"seed": 22})
    old, new = _versions(project_copy, "06_models/agents.pt")
    _run(project_copy, "evaluate")
    _run(project_copy, "evaluate", load_versions={"agents": old})
    evaluations = _versions(project_copy, "08_reporting/evaluation_metrics.json")
    assert len(evaluations) == 2
    metrics = [
        json.loads(
            (
                project_copy
                / "data/08_reporting/evaluation_metrics.json"
                / v
                / "evaluation_metrics.json"
            ).read_text()
        )
        for v in evaluations
    ]
    # Latest agents by default, the pinned old ones when asked (by version and seed).
    assert metrics[0]["versions"]["agents"] == new and metrics[0]["seed"] == 22
    assert metrics[1]["versions"]["agents"] == old and metrics[1]["seed"] == 11
    for m in metrics:
        assert m["pairs"] == 40
        assert 0.0 <= m["accuracy"] <= 1.0
        # The test environment plays pvg for at most 4 rounds.
        assert 1.0 <= m["random_prover_mean_rounds"] <= 4.0
        for key in ("accuracy", "completeness", "soundness", "timeout_rate"):
            assert 0.0 <= m[f"random_prover_{key}"] <= 1.0, key
        assert m["prover_answers"] >= 0 and set(MESSAGE_STATISTICS) <= set(m)
        assert (
            m["versions"]["graph_pairs_test"]
            == _versions(project_copy, "03_primary/graph_pairs_test.pt")[0]
        )
    _run(project_copy, "compare")
    table = pd.read_csv(
        project_copy
        / "data/08_reporting/runs_comparison.csv"
        / _versions(project_copy, "08_reporting/runs_comparison.csv")[0]
        / "runs_comparison.csv"
    )
    assert len(table) == 2
    assert table["agents_version"].tolist() == [new, old]
    assert table["seed"].tolist() == [22, 11]
    assert table["environment"].tolist() == ["test", "test"]
    assert table["accuracy"].tolist() == pytest.approx([m["accuracy"] for m in metrics])
    assert table["soundness"].tolist() == pytest.approx(
        [m["soundness"] for m in metrics]
    )
    transcripts = _versions(project_copy, "08_reporting/evaluation_transcripts.jsonl")
    assert len(transcripts) == 2
    assert len(_versions(project_copy, "08_reporting/evaluation_plots.png")) == 2


@pytest.mark.slow
def test_the_report_shows_this_runs_evaluation_not_the_newest(project_copy, capsys):
    """A run that started later and finished earlier has a newer version: the
    report must still show what this run saved."""
    bootstrap_project(project_copy)
    _run(project_copy, "data_generation")
    _run(project_copy, "train")
    metrics_root = project_copy / "data/08_reporting/evaluation_metrics.json"
    other = metrics_root / "9999-01-01T00.00.00.000Z" / "evaluation_metrics.json"
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps({"accuracy": 0.123}))
    capsys.readouterr()
    _run(project_copy, "evaluate")
    report = capsys.readouterr().out
    (own,) = [
        v
        for v in _versions(project_copy, "08_reporting/evaluation_metrics.json")
        if not v.startswith("9999")
    ]
    saved = json.loads((metrics_root / own / "evaluation_metrics.json").read_text())
    assert f"accuracy {saved['accuracy']:.3f}," in report
    assert "0.123" not in report
    assert f"evaluation_metrics.json/{own}/evaluation_metrics.json" in report
    assert f"evaluation_plots.png/{own}/evaluation_plots.png" in report


@pytest.mark.slow
def test_missing_pinned_version_lists_the_available_ones(project_copy):
    bootstrap_project(project_copy)
    _run(project_copy, "data_generation")
    _run(project_copy, "train")
    (available,) = _versions(project_copy, "06_models/agents.pt")
    from click import ClickException

    with pytest.raises(ClickException) as error:
        _run(
            project_copy,
            "evaluate",
            load_versions={"agents": "2001-01-01T00.00.00.000Z"},
        )
    assert "agents:2001-01-01T00.00.00.000Z: no such version" in error.value.message
    assert available in error.value.message


@pytest.fixture(scope="module")
def test_pairs(prime_table):
    spec = GenerationSpec(
        num_pairs=32,
        seed=3,
        graph_sizes=[7, 8],
        edge_probabilities=[0.4],
        max_nodes=8,
        wl_max_iterations=5,
        non_isomorphic_fraction=0.5,
        wl_score_proportions={1: 0.5, 2: 0.25, 3: 0.25},
        isomorphic_copied_fraction=0.5,
        pool_size=5_000,
        max_pool_draws=50,
    )
    return generate_graph_pairs(spec, prime_table, progress=False)


def _exported(name: str, trainer: str) -> dict:
    # The verifier's first turn that can decide is round 2: every episode has the
    # round-0 question and its round-1 answer.
    protocol = build_protocol(name, max_message_rounds=4, min_message_rounds=2)
    torch.manual_seed(0)
    agents = build_agents(protocol, TINY, TINY, 8, classifiers=trainer != "ppo")
    specs = {a: TINY for a in agents}
    metadata = {
        "trainer": trainer,
        "protocol": asdict(protocol),
        "max_nodes": 8,
        "seed": 0,
        "training_history": [],
    }
    return export_agents(agents, specs, metadata)


def _metrics(agents: dict, pairs: dict) -> tuple[dict, pd.DataFrame]:
    metrics, breakdown, _ = evaluate_agents(agents, pairs, {"batch_size": 8}, {})
    return metrics, breakdown.set_index(["grouping", "group"])


@pytest.mark.parametrize("name", ["pvg", "debate"])
def test_ppo_agents_get_learning_message_and_ablation_metrics(test_pairs, name):
    metrics, breakdown = _metrics(_exported(name, "ppo"), test_pairs)
    for key in LEARNING_METRICS:
        assert key in metrics and f"random_prover_{key}" in metrics, key
    for key in ("accuracy", "completeness", "soundness", "timeout_rate"):
        assert 0.0 <= metrics[f"random_prover_{key}"] <= 1.0, key
    # The learning metrics agree with the per-WL-score breakdown.
    by_score = breakdown.loc["wl_score"]
    assert metrics["accuracy_isomorphic"] == pytest.approx(by_score.loc[-1, "accuracy"])
    assert metrics["accuracy_wl1"] == pytest.approx(by_score.loc[1, "accuracy"])
    hard = by_score[by_score.index >= 3]
    assert (hard["pairs"] * hard["accuracy"]).sum() / hard["pairs"].sum() == (
        pytest.approx(metrics["accuracy_wl3plus"])
    )
    answers_per_pair = {"pvg": 1, "debate": 2}[name]  # round 0 asks, round 1 answers
    assert metrics["prover_answers"] >= answers_per_pair * metrics["pairs"]
    assert 0.0 <= metrics["prover_answer_other_graph"] <= 1.0
    assert 0.0 <= metrics["prover_answer_same_wl_colour"] <= 1.0


@pytest.mark.parametrize(
    ("name", "trainer"), [("pvg", "solo_agent"), ("solo_verifier", "ppo")]
)
def test_nothing_to_ablate_without_a_prover(test_pairs, name, trainer):
    metrics, _ = _metrics(_exported(name, trainer), test_pairs)
    for key in LEARNING_METRICS:
        assert math.isnan(metrics[f"random_prover_{key}"]), key
    assert metrics["prover_answers"] == 0
    assert all(math.isnan(metrics[key]) for key in MESSAGE_STATISTICS[1:])
    assert 0.0 <= metrics["accuracy"] <= 1.0


@pytest.mark.slow
def test_a_run_does_not_take_another_environments_newest_outputs(project_copy):
    import shutil

    from click import ClickException

    shutil.copytree(project_copy / "conf/test", project_copy / "conf/other")
    bootstrap_project(project_copy)
    _run(project_copy, "data_generation")
    _run(project_copy, "train")
    (agents,) = _versions(project_copy, "06_models/agents.pt")
    (pairs,) = _versions(project_copy, "03_primary/graph_pairs_test.pt")

    def run_in_other(**kwargs):
        with KedroSession.create(project_path=project_copy, env="other") as session:
            session.run(pipeline_names=["evaluate"], **kwargs)

    with pytest.raises(ClickException) as refused:
        run_in_other()
    message = refused.value.message
    assert (
        f"the newest 'agents' ({agents}) was made in environment 'test', this run's "
        "is 'other': run `kedro run --pipelines train --env other` first, or pin it "
        f"with --load-versions agents:{agents}" in message
    )
    assert f"the newest 'graph_pairs_test' ({pairs}) was made in environment" in message
    assert not (project_copy / "data/08_reporting/evaluation_metrics.json").exists()
    # Pinned, they are the user's choice; the metrics say where the agents trained.
    run_in_other(load_versions={"agents": agents, "graph_pairs_test": pairs})
    (evaluated,) = _versions(project_copy, "08_reporting/evaluation_metrics.json")
    metrics = json.loads(
        (
            project_copy
            / "data/08_reporting/evaluation_metrics.json"
            / evaluated
            / "evaluation_metrics.json"
        ).read_text()
    )
    assert metrics["environment"] == "test"
    assert metrics["dataset"]["environment"] == "test"
