"""Running one experiment (a sweep trial or an API call) as its own Kedro session."""

from __future__ import annotations

import json
import os
import traceback
from pathlib import Path
from typing import Any


def run_session(
    project_path: str | Path,
    env: str,
    runtime_params: dict[str, Any],
    pipelines: list[str],
) -> dict[str, Any]:
    """Run ``pipelines`` in a new Kedro session; return versions and metrics.

    When the session both trains and evaluates, evaluation is pinned to the agents
    this session saved (another trial running at the same time may save newer ones).
    """
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    project_path = Path(project_path).resolve()
    bootstrap_project(project_path)
    with KedroSession.create(
        project_path=project_path, env=env, runtime_params=runtime_params
    ) as session:
        version = session.session_id
        load_versions = {}
        if "train" in pipelines and "evaluate" in pipelines:
            load_versions["agents"] = version
        session.run(pipeline_names=pipelines, load_versions=load_versions)
        catalog = session.load_context().config_loader["catalog"]
    result: dict[str, Any] = {"version": version, "metrics": None}
    if "evaluate" in pipelines:
        path = Path(catalog["evaluation_metrics"]["filepath"])
        if not path.is_absolute():
            path = project_path / path
        metrics_file = path / version / path.name
        result["metrics"] = json.loads(metrics_file.read_text())
    return result


def run_trial(
    project_path: str,
    env: str,
    sweep: str,
    trial_id: str,
    overrides: dict[str, Any],
    pipelines: list[str],
    state_dir: str,
) -> dict[str, Any]:
    """Run one sweep trial and record its outcome in ``state_dir/<trial_id>.json``.

    Never raises: a failure is recorded with its error so other trials go on.
    """
    from pvg_pipeline.sweeps.definition import nest

    record: dict[str, Any] = {"trial_id": trial_id, "overrides": overrides}
    runtime = nest(overrides)
    runtime["experiment"] = {"sweep": sweep, "trial": trial_id}
    try:
        outcome = run_session(project_path, env, runtime, pipelines)
        record |= {"status": "completed", **outcome}
    except BaseException as error:  # noqa: BLE001 - recorded, not swallowed silently
        record |= {
            "status": "failed",
            "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc(limit=5),
        }
        if isinstance(error, KeyboardInterrupt):
            raise
    finally:
        path = Path(state_dir) / f"{trial_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        if "status" in record:
            path.write_text(json.dumps(record, indent=2, default=str))
    return record
