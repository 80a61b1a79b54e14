"""Reading a sweep's trials from disk, finished or not.

A trial's results live in three places: its state record (written when it ends),
the versioned datasets its run saved (``training_history``, ``agents``,
``evaluation_metrics``, ``evaluation_breakdown``), and, while it trains or after an
interruption, the ``history`` inside the newest checkpoint of its own checkpoint
folder. Whichever reaches furthest is used, so results can be read mid-sweep.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from pvg_pipeline.sweeps.definition import (
    SweepDefinition,
    Trial,
    control_of,
    load_sweep,
    parameters_fingerprint,
    resolve_trial,
    sweep_root,
    training_budget,
)
from pvg_pipeline.sweeps.learning import TrialResult
from pvg_pipeline.sweeps.trials import latest_checkpoint_run, trial_checkpoint_root

#: Datasets read per trial (catalog names).
DATASETS = (
    "training_history",
    "training_run",
    "agents",
    "evaluation_metrics",
    "evaluation_breakdown",
)


def catalog_paths(project: Path, env: str) -> dict[str, Path]:
    """Absolute folder of every dataset in :data:`DATASETS` (versions inside)."""
    from kedro.config import OmegaConfigLoader

    from pvg_pipeline.settings import CONFIG_LOADER_ARGS

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "register_new_resolver", UserWarning)
        loader = OmegaConfigLoader(
            conf_source=str(project / "conf"),
            **{**CONFIG_LOADER_ARGS, "default_run_env": env},
        )
        catalog = loader["catalog"]
    paths = {}
    for name in DATASETS:
        path = Path(catalog[name]["filepath"])
        paths[name] = path if path.is_absolute() else project / path
    return paths


def _version_file(folder: Path, version: str | None) -> Path | None:
    if not version:
        return None
    path = folder / version / folder.name
    return path if path.is_file() else None


def tagged_training_runs(training_run: Path, sweep: str) -> dict[str, list[str]]:
    """Versions of ``training_run`` per trial id of ``sweep``, oldest first."""
    found: dict[str, list[str]] = {}
    if not training_run.is_dir():
        return found
    for version in sorted(p.name for p in training_run.iterdir()):
        path = _version_file(training_run, version)
        if path is None:
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        experiment = (record.get("parameters") or {}).get("experiment") or {}
        if experiment.get("sweep") == sweep and experiment.get("trial"):
            found.setdefault(experiment["trial"], []).append(version)
    return found


def saved_history(paths: dict[str, Path], version: str) -> pd.DataFrame | None:
    """The training history a run saved: the CSV, else the agents' copy."""
    csv = _version_file(paths["training_history"], version)
    if csv is not None:
        try:
            return pd.read_csv(csv)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()
    agents = _version_file(paths["agents"], version)
    if agents is not None:
        import torch

        exported = torch.load(agents, weights_only=True)
        return pd.DataFrame(exported.get("training_history", []))
    return None


def checkpoint_history(root: Path) -> tuple[pd.DataFrame, Path] | None:
    """History in the newest checkpoint of a trial's folder, and that file."""
    import torch

    latest = latest_checkpoint_run(root)
    if latest is None:
        return None
    run, iteration = latest
    path = root / run / f"iteration_{iteration:07d}.pt"
    state = torch.load(path, weights_only=True)
    return pd.DataFrame(state.get("history", [])), path


def _reach(history: pd.DataFrame | None) -> float:
    if history is None or history.empty:
        return -1.0
    column = "iteration" if "iteration" in history else "epoch"
    if column not in history:
        return float(len(history))
    return float(pd.to_numeric(history[column], errors="coerce").max())


def read_trial(
    project: Path,
    env: str,
    sweep: str,
    trial: Trial,
    parameters: dict[str, Any],
    paths: dict[str, Path],
    versions: list[str],
    state_dir: Path,
) -> TrialResult:
    """Everything known about one trial (see the module docstring)."""
    state_file = state_dir / f"{trial.trial_id}.json"
    record = json.loads(state_file.read_text()) if state_file.is_file() else {}
    completed = record.get("status") == "completed"
    version = record.get("version") if completed else None
    version = version or (versions[-1] if versions else None)
    history, source = pd.DataFrame(), ""
    if version:
        saved = saved_history(paths, version)
        if saved is not None:
            history, source = saved, f"training_history {version}"
    checkpoint_time = None
    if not completed:
        root = trial_checkpoint_root(
            project, env, sweep, trial.trial_id, parameters["trainer"]["checkpoint_dir"]
        )
        found = checkpoint_history(root)
        if found is not None:
            checkpoint_time = found[1].stat().st_mtime
            if _reach(found[0]) > _reach(history):
                history, source = found[0], f"checkpoint {found[1].name}"
    metrics = record.get("metrics") if completed else None
    if metrics is None and version:
        metrics_file = _version_file(paths["evaluation_metrics"], version)
        metrics = json.loads(metrics_file.read_text()) if metrics_file else None
    breakdown_file = _version_file(paths["evaluation_breakdown"], version)
    breakdown = pd.read_csv(breakdown_file) if breakdown_file else None
    if completed:
        status = "completed"
    elif record.get("status") == "failed" and (
        checkpoint_time is None or checkpoint_time <= state_file.stat().st_mtime
    ):
        # Nothing was written since the failure was recorded: not re-running.
        status = "failed"
    else:
        status = "running or interrupted" if source else "not started"
    return TrialResult(
        trial_id=trial.trial_id,
        protocol=(parameters.get("protocol") or {}).get("name"),
        control=control_of(parameters),
        seed=parameters.get("seed"),
        budget=training_budget(parameters),
        status=status,
        history=history,
        metrics=metrics,
        breakdown=breakdown,
        history_source=source,
        parameters=parameters_fingerprint(parameters),
    )


def collect_sweep(
    project: Path, env: str, sweep: str
) -> tuple[SweepDefinition, list[tuple[Trial, TrialResult]]]:
    """The sweep's definition and every trial with what is known of it, in order."""
    from pvg_pipeline.config import load_parameters

    base = load_parameters(env, project / "conf")
    definition, trials = load_sweep(project / "conf", env, sweep, base)
    paths = catalog_paths(project, env)
    tagged = tagged_training_runs(paths["training_run"], sweep)
    state_dir = sweep_root(project, env, sweep) / "trials"
    return definition, [
        (
            trial,
            read_trial(
                project,
                env,
                sweep,
                trial,
                resolve_trial(base, trial),
                paths,
                tagged.get(trial.trial_id, []),
                state_dir,
            ),
        )
        for trial in trials
    ]


def collect_trials(project: Path, env: str, sweep: str) -> list[TrialResult]:
    """Every trial of ``conf/<env>/sweeps/<sweep>.yml``, in the sweep's order."""
    return [result for _, result in collect_sweep(project, env, sweep)[1]]
