"""Executing a sweep's trials on a local process pool or on Ray."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io.core import Version
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.pandas import CSVDataset
from tqdm.auto import tqdm

from pvg_pipeline.pvg.reports import comparison_figure
from pvg_pipeline.sweeps.definition import (
    Trial,
    budget_of,
    control_of,
    resolve_trial,
    training_budget,
)
from pvg_pipeline.sweeps.trials import run_trial

HEADLINE = ("accuracy", "completeness", "soundness", "timeout_rate", "mean_rounds")


@dataclass
class SweepPlan:
    """Everything needed to run a sweep's trials."""

    project_path: Path
    env: str
    sweep: str
    trials: list[Trial]
    pipelines: list[str]
    state_dir: Path
    results_dir: Path
    base_parameters: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, int] = field(default_factory=dict)
    #: Trial ids this run may start (``kedro sweep --trials``); None: all.
    selected: set[str] | None = None

    def trial_arguments(self, trial: Trial) -> tuple:
        """Arguments of :func:`run_trial` for ``trial``."""
        return (
            str(self.project_path),
            self.env,
            self.sweep,
            trial.trial_id,
            trial.overrides,
            self.pipelines,
            str(self.state_dir),
        )

    def pending(self) -> list[Trial]:
        """Trials not yet completed (never run, failed, or interrupted), or
        completed with a smaller PPO budget than they now ask for."""
        return [
            t
            for t in self.trials
            if not self._done(t)
            and (self.selected is None or t.trial_id in self.selected)
        ]

    def completed(self) -> int:
        """Number of trials whose budget is reached."""
        return sum(self._done(t) for t in self.trials)

    def status(self, identifier: str) -> str | None:
        """Recorded status of a trial, if any."""
        return self._record(identifier).get("status")

    def _record(self, identifier: str) -> dict:
        path = self.state_dir / f"{identifier}.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _done(self, trial: Trial) -> bool:
        record = self._record(trial.trial_id)
        if record.get("status") != "completed":
            return False
        wanted = budget_of(trial.overrides)
        reached = budget_of(record.get("overrides", {}))
        return wanted is None or (reached is not None and reached >= wanted)


def run_local(
    plan: SweepPlan, trials: list[Trial], max_parallel: int
) -> Iterator[dict]:
    """Trials in a ``spawn`` process pool (never fork: CUDA does not survive it)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max_parallel, mp_context=context) as pool:
        futures: dict[Future, Trial] = {
            pool.submit(run_trial, *plan.trial_arguments(t)): t for t in trials
        }
        try:
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    trial = futures.pop(future)
                    yield _result(future.result, trial)
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            # A worker would otherwise train on, orphaned, after a SIGTERM (Ctrl-C
            # reaches the workers itself); its trial resumes from its checkpoint.
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            raise


def run_ray(
    plan: SweepPlan,
    trials: list[Trial],
    max_parallel: int,
    address: str | None,
    gpus_per_trial: float,
    num_cpus: int | None = None,
) -> Iterator[dict]:
    """Trials as Ray tasks; a local Ray instance unless ``address`` joins a cluster."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            include_dashboard=False,
            log_to_driver=False,
        )
    task = ray.remote(num_cpus=1, num_gpus=gpus_per_trial, max_retries=0)(run_trial)
    queue = list(trials)
    running: dict[Any, Trial] = {}
    try:
        while queue or running:
            while queue and len(running) < max_parallel:
                trial = queue.pop(0)
                running[task.remote(*plan.trial_arguments(trial))] = trial
            done, _ = ray.wait(list(running), num_returns=1)
            for reference in done:
                trial = running.pop(reference)
                yield _result(lambda ref=reference: ray.get(ref), trial)
    except KeyboardInterrupt:
        for reference in running:
            ray.cancel(reference, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


def _result(get: Callable[[], dict], trial: Trial) -> dict:
    try:
        return get()
    except Exception as error:  # a worker that died before recording anything
        return {"trial_id": trial.trial_id, "status": "failed", "error": repr(error)}


def execute(
    plan: SweepPlan,
    backend: str,
    max_parallel: int,
    address: str | None = None,
    gpus_per_trial: float = 0.0,
    num_cpus: int | None = None,
) -> pd.DataFrame:
    """Run the pending trials, then write the sweep's versioned results table."""
    pending = plan.pending()
    counts = {"done": plan.completed(), "failed": 0, "running": 0}
    bar = tqdm(
        total=len(plan.trials), initial=counts["done"], desc=f"sweep {plan.sweep}"
    )
    stream = (
        run_ray(plan, pending, max_parallel, address, gpus_per_trial, num_cpus)
        if backend == "ray"
        else run_local(plan, pending, max_parallel)
    )
    finished = 0
    try:
        for result in stream:
            counts["done" if result.get("status") == "completed" else "failed"] += 1
            finished += 1
            counts["running"] = min(max_parallel, len(pending) - finished)
            bar.update(1)
            bar.set_postfix(failed=counts["failed"], running=counts["running"])
            status = result.get("status")
            error = f": {result.get('error')}" if status != "completed" else ""
            bar.write(
                f"{result.get('trial_id')} {status}{error}"
                + (f" (log: {result['log']})" if result.get("log") else "")
            )
    finally:
        bar.close()
        plan.summary = counts
    return write_results(plan)


def results_table(plan: SweepPlan) -> pd.DataFrame:
    """One row per trial: varied parameters, status, headline metrics, versions."""
    rows = []
    for trial in plan.trials:
        path = plan.state_dir / f"{trial.trial_id}.json"
        record = (
            json.loads(path.read_text()) if path.is_file() else {"status": "missing"}
        )
        metrics = record.get("metrics") or {}
        versions = metrics.get("versions", {})
        # From the parameters, not the metrics: a train-only trial has no metrics.
        parameters = resolve_trial(plan.base_parameters, trial)
        rows.append(
            {
                "trial_id": trial.trial_id,
                "status": record.get("status"),
                "error": record.get("error"),
                **{key: metrics.get(key) for key in HEADLINE},
                "protocol": (parameters.get("protocol") or {}).get("name"),
                "control": control_of(parameters),
                "trainer": (parameters.get("trainer") or {}).get("name"),
                "seed": parameters.get("seed"),
                "iterations": training_budget(parameters),
                "resumed_from_iteration": record.get("resumed_from_iteration"),
                "agents_version": versions.get("agents") or record.get("version"),
                "dataset_version": versions.get("graph_pairs_test"),
                **trial.overrides,  # the varied values win over what metrics echo
            }
        )
    return pd.DataFrame(rows)


def write_results(plan: SweepPlan) -> pd.DataFrame:
    """Save the results table and comparison plot as new versions."""
    table = results_table(plan)
    version = Version(None, None)
    CSVDataset(
        filepath=str(plan.results_dir / "results.csv"),
        version=version,
        save_args={"index": False},
    ).save(table)
    # Only evaluated trials have metrics to compare (a sweep may only train).
    evaluated = (table["status"] == "completed") & table["accuracy"].notna()
    completed = table[evaluated].copy()
    completed["evaluation_version"] = completed["trial_id"]
    MatplotlibDataset(
        filepath=str(plan.results_dir / "comparison.png"), version=version
    ).save(
        comparison_figure(
            completed.reset_index(drop=True),
            f"Sweep {plan.sweep} (environment {plan.env}): trials on the test split",
        )
    )
    return table
