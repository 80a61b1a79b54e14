"""The analysis notebook executes against the catalog of the test environment."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "analysis.ipynb"


@pytest.mark.slow
def test_analysis_notebook_runs(project_copy, monkeypatch):
    bootstrap_project(project_copy)
    for pipeline in ("__default__", "compare"):
        with KedroSession.create(project_path=project_copy, env="test") as session:
            session.run(pipeline_names=[pipeline])
    (project_copy / "notebooks").mkdir()
    shutil.copy(NOTEBOOK, project_copy / "notebooks" / NOTEBOOK.name)
    monkeypatch.setenv("PVG_ENV", "test")
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "1")
    notebook = nbformat.read(project_copy / "notebooks" / NOTEBOOK.name, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(project_copy / "notebooks")}},
    ).execute()
    outputs = [
        o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
    ]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "⇒" in text  # transcripts were printed
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert os.environ["PVG_ENV"] == "test"
