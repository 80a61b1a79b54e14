"""Project CLI commands: ``kedro sweep``."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import click
from kedro.framework.cli.utils import KedroCliError

from pvg_pipeline.config import load_parameters


def _show_message(self: KedroCliError, file: object = None) -> None:
    # Kedro's own ``show`` formats ``sys.exc_info()``, which is empty once click
    # reports the error: a malformed ``--load-versions`` printed "NoneType: None"
    # and pointed at a ``--verbose`` option that does not exist.
    message = self.format_message()
    if re.match(r"Module '(notebook|jupyterlab)' not found", message):
        # Kedro's advice names a requirements.txt this project does not have.
        message = (
            message.split(".")[0] + ": install the notebooks extra with "
            "`.venv/bin/pip install -e '.[notebooks]'`"
        )
    click.echo(f"Error: {message}", err=True)


# Kedro imports this module for every command run in the project.
KedroCliError.show = _show_message  # type: ignore[method-assign]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@click.group(name="pvg_pipeline")
def cli() -> None:
    """Commands of the pvg_pipeline project."""


@cli.command()
@click.option(
    "--env", "-e", default="base", show_default=True, help="Kedro environment."
)
@click.option(
    "--sweep", "name", required=True, help="Sweep file conf/<env>/sweeps/<name>.yml."
)
@click.option(
    "--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True
)
@click.option("--address", default=None, help="Ray cluster to join (ray://… or auto).")
@click.option("--max-parallel", type=int, default=None, help="Trials at once.")
@click.option("--gpus-per-trial", type=float, default=0.0, show_default=True)
@click.option(
    "--num-cpus", type=int, default=None, help="CPUs of a local Ray instance."
)
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    default=None,
    help="PPO budget of every trial for this run, instead of the sweep file's; "
    "a later run with a larger budget continues each trial from its checkpoint.",
)
@click.option(
    "--trials",
    "trial_positions",
    default=None,
    help="Only these trials, by position in the sweep file from 0: e.g. 0-4,9. "
    "The others are left as they are.",
)
def sweep(
    env: str,
    name: str,
    backend: str,
    address: str | None,
    max_parallel: int | None,
    gpus_per_trial: float,
    num_cpus: int | None,
    iterations: int | None,
    trial_positions: str | None,
) -> None:
    """Run every trial of a sweep, each as its own Kedro session.

    Completed trials are skipped on a re-run (unless their PPO budget grew: they
    continue from their checkpoints); failed or missing ones run again.
    """
    from pvg_pipeline.sweeps.definition import load_sweep, select_trials, sweep_root
    from pvg_pipeline.sweeps.runner import SweepPlan, execute

    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    project = Path.cwd()
    base_parameters = load_parameters(env, project / "conf")
    definition, trials = load_sweep(
        project / "conf", env, name, base_parameters, iterations
    )
    selected = select_trials(trial_positions, trials) if trial_positions else None
    root = sweep_root(project, env, name)
    plan = SweepPlan(
        project_path=project,
        env=env,
        sweep=name,
        trials=trials,
        pipelines=definition.pipelines,
        state_dir=root / "trials",
        results_dir=root,
        base_parameters=base_parameters,
        selected=selected,
    )
    parallel = max_parallel or max(1, min(len(trials), os.cpu_count() or 1))
    # `kill` (SIGTERM) stops the trials as Ctrl-C does, instead of leaving them.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        table = execute(plan, backend, parallel, address, gpus_per_trial, num_cpus)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: {plan.summary}; re-run the same command to resume")
        raise SystemExit(130) from None
    asked = table if selected is None else table[table["trial_id"].isin(selected)]
    failed = asked[asked["status"] != "completed"]
    not_run = "" if selected is None else f", {len(table) - len(asked)} not selected"
    click.echo(
        f"sweep {name}: {len(asked) - len(failed)} completed, {len(failed)} failed"
        f"{not_run}; results in {root}"
    )
    for row in failed.itertuples():
        click.echo(f"  {row.trial_id} failed: {row.error}")
    if len(failed):
        raise SystemExit(1)
