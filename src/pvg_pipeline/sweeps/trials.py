"""Running one experiment (a sweep trial or an API call) as its own Kedro session."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kedro.framework.session import KedroSession


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors too) to ``log``.

    Trials running side by side would otherwise interleave their progress bars
    and logs on one console.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with open(log, "ab") as file:
        try:
            for fd in saved:
                os.dup2(file.fileno(), fd)
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)


def run_session(
    project_path: str | Path,
    env: str,
    runtime_params: dict[str, Any],
    pipelines: list[str],
) -> dict[str, Any]:
    """Run ``pipelines`` in a new Kedro session; return versions and metrics.

    When the run both trains and evaluates, evaluation is pinned to the agents
    this run saved (another trial running at the same time may save newer ones).
    """
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    from kedro.framework.startup import bootstrap_project

    project_path = Path(project_path).resolve()
    bootstrap_project(project_path)
    with new_session(project_path, env, runtime_params) as session:
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


#: Where sessions started through :func:`new_session` reserve their ids.
RESERVED_SESSION_IDS = Path("data") / ".session_ids"


def new_session(
    project_path: Path, env: str, runtime_params: dict[str, Any]
) -> KedroSession:
    """A Kedro session whose id no other session of this project has taken.

    The id is a timestamp in milliseconds and is every saved dataset's version, so
    trials started in the same millisecond (a sweep's first trials) would save
    into the same version folders and all but one would fail at the end. Each id
    is reserved by creating a file exclusively; a taken id means a new session.
    """
    from kedro.framework.session import KedroSession

    reserved = project_path / RESERVED_SESSION_IDS
    reserved.mkdir(parents=True, exist_ok=True)
    for _ in range(1000):
        session = KedroSession.create(
            project_path=project_path, env=env, runtime_params=runtime_params
        )
        try:
            os.close(os.open(reserved / session.session_id, os.O_CREAT | os.O_EXCL))
            return session
        except FileExistsError:
            session.close()
            time.sleep(0.002)
    raise RuntimeError(f"no free Kedro session id in {reserved}")


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

    The trial checkpoints into its own folder and, when that folder already holds a
    checkpoint, continues from it (see :func:`trial_checkpointing`). Never raises
    (except on Ctrl-C): a failure is recorded with its error so other trials go on.
    """
    from pvg_pipeline.params import merge_parameters
    from pvg_pipeline.sweeps.definition import nest

    log = Path(state_dir).parent / "logs" / f"{trial_id}.log"
    record: dict[str, Any] = {"trial_id": trial_id, "overrides": overrides}
    record["log"] = str(log)
    runtime = nest(overrides)
    runtime["experiment"] = {"sweep": sweep, "trial": trial_id}
    try:
        checkpointing, resumed = trial_checkpointing(
            Path(project_path), env, sweep, trial_id, runtime
        )
        runtime = merge_parameters(runtime, {"trainer": checkpointing})
        record |= {"checkpoint_dir": checkpointing["checkpoint_dir"], **resumed}
        with output_to(log):
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


def trial_checkpoint_root(
    project_path: Path, env: str, sweep: str, trial_id: str, checkpoint_dir: str
) -> Path:
    """The folder holding a sweep trial's checkpoint runs.

    One folder per trial, so that trials running at the same time never pick up
    each other's runs; absolute, because Ray workers may run in another folder.
    """
    root = Path(checkpoint_dir)
    if not root.is_absolute():
        root = project_path / root
    return root / "sweeps" / env / sweep / trial_id


def latest_checkpoint_run(root: Path) -> tuple[str, int] | None:
    """Newest run folder under ``root`` that holds a checkpoint, and its iteration."""
    from pvg_pipeline.pvg.trainers.checkpoints import CheckpointStore

    if not root.is_dir():
        return None
    # Run folders are named by UTC timestamp, so the name order is the time order.
    for run in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True):
        iterations = CheckpointStore(run, {}).iterations()
        if iterations:
            return run.name, iterations[-1]
    return None


def trial_checkpointing(
    project_path: Path, env: str, sweep: str, trial_id: str, runtime: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``trainer`` overrides that give a trial its own checkpoints, resuming them.

    A trial whose folder already has a checkpoint (it was interrupted, or failed
    after its first checkpoint) continues from the newest one; the trainer refuses
    a checkpoint made with other parameters, so a changed trial fails instead of
    silently starting again.

    Returns
    -------
    tuple
        The ``trainer`` overrides, and what to record about the resume.
    """
    from pvg_pipeline.config import load_parameters
    from pvg_pipeline.params import merge_parameters

    parameters = merge_parameters(load_parameters(env, project_path / "conf"), runtime)
    root = trial_checkpoint_root(
        project_path, env, sweep, trial_id, parameters["trainer"]["checkpoint_dir"]
    )
    latest = latest_checkpoint_run(root)
    trainer: dict[str, Any] = {
        "checkpoint_dir": str(root),
        "resume": False,
        "resume_run": latest[0] if latest else None,
    }
    resumed = (
        {"resumed_run": latest[0], "resumed_from_iteration": latest[1]}
        if latest
        else {}
    )
    return trainer, resumed
