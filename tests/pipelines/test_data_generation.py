"""The data_generation pipeline: nodes, a real Kedro session, and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from pvg_pipeline.pipeline_registry import register_pipelines
from pvg_pipeline.pipelines.data_generation.nodes import (
    make_graph_pairs,
    summarise_graph_pairs,
)

SMALL = {
    "hash_size": 65535,
    "graph_sizes": [7],
    "edge_probabilities": [0.5],
    "pool_size": 5000,
    "train": {"num_pairs": 20, "seed": 1},
    "test": {"num_pairs": 10, "seed": 2},
}


def test_make_graph_pairs_records_its_parameters(prime_table):
    pairs = make_graph_pairs(prime_table[:65535], SMALL, SMALL["train"], "cpu")
    assert pairs["adjacency"].shape == (20, 2, 7, 7)
    recorded = pairs["generation_parameters"]
    assert recorded["seed"] == 1 and recorded["num_pairs"] == 20
    assert recorded["graph_sizes"] == [7] and recorded["max_nodes"] == 7


def test_summary_counts_every_pair(prime_table):
    train = make_graph_pairs(prime_table[:65535], SMALL, SMALL["train"], "cpu")
    test = make_graph_pairs(prime_table[:65535], SMALL, SMALL["test"], "cpu")
    summary, figure = summarise_graph_pairs(train, test)
    totals = summary.groupby("split")["pairs"].sum().to_dict()
    assert totals == {"train": 20, "test": 10}
    iso = summary[summary["wl_score"] == -1]
    assert iso["is_isomorphic"].all() and iso["pairs"].sum() == 15
    assert figure.axes[0].get_title() == "Graph pairs by WL score"


def test_registry_lists_data_generation():
    pipelines = register_pipelines()
    assert {"data_generation", "__default__"} <= set(pipelines)
    names = {n.name for n in pipelines["data_generation"].nodes}
    assert names == {
        "make_prime_table",
        "make_graph_pairs_train",
        "make_graph_pairs_test",
        "summarise_graph_pairs",
    }


@pytest.mark.slow
def test_session_run_writes_new_versions_and_overwrites_nothing(project_copy):
    bootstrap_project(project_copy)
    for _ in range(2):
        with KedroSession.create(project_path=project_copy, env="test") as session:
            session.run(pipeline_names=["data_generation"])
    for name in (
        "01_raw/prime_table.pt",
        "03_primary/graph_pairs_train.pt",
        "03_primary/graph_pairs_test.pt",
        "08_reporting/graph_pairs_summary.csv",
        "08_reporting/wl_score_distribution.png",
    ):
        versions = sorted((project_copy / "data" / name).iterdir())
        assert len(versions) == 2, name
    # The prime table is the same every run: its second version is the same file.
    first_table, second_table = (
        v / "prime_table.pt"
        for v in sorted((project_copy / "data/01_raw/prime_table.pt").iterdir())
    )
    assert first_table.stat().st_ino == second_table.stat().st_ino
    train_versions = sorted(
        (project_copy / "data/03_primary/graph_pairs_train.pt").iterdir()
    )
    first, second = (
        torch.load(v / "graph_pairs_train.pt", weights_only=True)
        for v in train_versions
    )
    # Same parameters and seed on CPU: identical data in both versions.
    assert torch.equal(first["adjacency"], second["adjacency"])
    assert first["adjacency"].shape == (80, 2, 8, 8)
    summary_dir = sorted(
        (project_copy / "data/08_reporting/graph_pairs_summary.csv").iterdir()
    )
    summary = pd.read_csv(summary_dir[-1] / "graph_pairs_summary.csv")
    assert summary.groupby("split")["pairs"].sum().to_dict() == {
        "train": 80,
        "test": 40,
    }


def _run_with(project: Path, params: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--env", "test", "--params", params],
        capture_output=True,
        text=True,
        env=env,
        cwd=project,
        timeout=60,
    )
    return result, time.monotonic() - start


def _errors(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


@pytest.mark.slow
def test_cli_rejects_bad_parameter_fast_with_one_line(project_copy):
    result, elapsed = _run_with(
        project_copy, "data_generation.edge_probabilities=[1.5]"
    )
    assert result.returncode != 0
    assert elapsed < 10  # validated before the pipelines (and torch) are imported
    assert _errors(result) == [
        "Error: invalid parameter data_generation.edge_probabilities[0] = 1.5: "
        "Input should be less than or equal to 1"
    ]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (project_copy / "data").exists() or not any(
        p.is_file() for p in (project_copy / "data").rglob("*")
    )


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_rejects_cuda_without_cuda_before_any_data_loads(project_copy):
    result, _ = _run_with(project_copy, "device=cuda")
    assert result.returncode != 0
    assert _errors(result) == [
        "Error: invalid parameter device = 'cuda': CUDA is not available on this "
        "machine; use device: auto or cpu"
    ]
    assert "Traceback" not in result.stderr + result.stdout
    # No third-party deprecation noise about code the user does not own.
    assert "register_new_resolver" not in result.stderr + result.stdout
    assert not (project_copy / "data").exists() or not any(
        p.is_file() for p in (project_copy / "data").rglob("*")
    )
