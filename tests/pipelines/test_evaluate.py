"""Evaluate and compare pipelines through real Kedro sessions."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project


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
    assert table["accuracy"].tolist() == pytest.approx([m["accuracy"] for m in metrics])
    assert table["soundness"].tolist() == pytest.approx(
        [m["soundness"] for m in metrics]
    )
    transcripts = _versions(project_copy, "08_reporting/evaluation_transcripts.jsonl")
    assert len(transcripts) == 2
    assert len(_versions(project_copy, "08_reporting/evaluation_plots.png")) == 2


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
    assert "dataset 'agents' has no saved version to load" in error.value.message
    assert available in error.value.message
