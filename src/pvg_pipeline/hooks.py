"""Kedro hooks: fail fast on bad parameters or missing inputs; track to W&B."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import click
from kedro.framework.hooks import hook_impl
from kedro.io import CatalogProtocol
from kedro.pipeline import Pipeline

from pvg_pipeline import run_errors, tracking
from pvg_pipeline.config_loader import run_environment
from pvg_pipeline.params import (
    ParameterError,
    ProjectParameters,
    TrackingParams,
    merge_parameters,
    parse_parameters,
)

logger = logging.getLogger(__name__)

#: Read-only datasets over the saved versions of another dataset.
VERSIONS_OF = {"evaluation_metrics_versions": "evaluation_metrics"}


def producer(dataset: str) -> str:
    """The registered pipeline whose nodes write ``dataset``."""
    from kedro.framework.project import pipelines

    written = VERSIONS_OF.get(dataset, dataset)
    for name, pipeline in pipelines.items():
        if name != "__default__" and written in pipeline.all_outputs():
            return name
    return "the pipeline that makes it"


class ParameterValidationHook:
    """Fail fast on bad parameters: unknown keys, wrong types, out-of-range values.

    Runs as soon as the context exists, before the pipelines (and torch) are
    imported, so a typo costs a couple of seconds, not a run.
    """

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        """Validate the resolved parameter tree (config + ``--params``)."""
        # Not ``context.params``: in kedro 1.7 it imports every pipeline first.
        parameters = merge_parameters(
            dict(context.config_loader["parameters"]),
            getattr(context, "_extra_params", None) or {},
        )
        run_errors.install(Path(context.project_path))
        checked = parse_parameters(ProjectParameters, parameters)
        if checked.device.startswith("cuda"):
            # Before any data loads; torch is imported only for a CUDA request.
            from pvg_pipeline.pvg.device import device_problem

            problem = device_problem(checked.device)
            if problem:
                raise ParameterError([f"device = {checked.device!r}: {problem}"])


class MissingInputError(click.ClickException):
    """Inputs of the pipeline have no saved version: one line per dataset."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("cannot run: " + "; ".join(problems))


class InputDatasetHook:
    """Before anything runs, every dataset the pipeline reads must exist."""

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: CatalogProtocol
    ) -> None:
        """Raise one readable error naming each missing input and its producer."""
        env = run_params.get("env") or "base"
        problems = _load_version_problems(
            run_params.get("load_versions") or {}, pipeline, catalog
        )
        if problems:
            raise MissingInputError(problems)
        for name in sorted(pipeline.inputs()):
            if name == "parameters" or name.startswith("params:"):
                continue
            if catalog.exists(name):
                continue
            dataset = catalog.get(name)
            versions = getattr(dataset, "available_versions", lambda: [])()
            hint = f"run `kedro run --pipelines {producer(name)} --env {env}` first"
            if versions:
                hint = f"available versions: {', '.join(versions[:10])}"
            problems.append(f"dataset '{name}' has no saved version to load; {hint}")
        if problems:
            raise MissingInputError(problems)
        problems = _environment_problems(
            run_environment(run_params.get("env")),
            pipeline,
            catalog,
            run_params.get("load_versions") or {},
        )
        if problems:
            raise MissingInputError(problems)


def _pairs_environment(pairs: Any) -> str | None:
    return (pairs.get("generation_parameters") or {}).get("environment")


#: Inputs that record the environment they were made in, and how to read it.
MADE_IN = {
    "graph_pairs_train": _pairs_environment,
    "graph_pairs_test": _pairs_environment,
    "agents": lambda agents: agents.get("environment"),
}


def _environment_problems(
    env: str,
    pipeline: Pipeline,
    catalog: CatalogProtocol,
    load_versions: dict[str, str],
) -> list[str]:
    """One line per newest input made in another environment than this run's.

    "Newest" is global to the data folder, so without this a run in one
    environment would silently read another's data or agents. A version pinned
    with ``--load-versions`` is the user's choice and is not checked; inputs saved
    before the environment was recorded are not either.
    """
    problems = []
    for name, made_in in MADE_IN.items():
        if name not in pipeline.inputs() or name in load_versions:
            continue
        try:
            other = made_in(catalog.load(name))
        except Exception:  # noqa: BLE001 - the node reports a load error itself
            continue
        if other is not None and other != env:
            version = (_versions_of(catalog.get(name)) or ["?"])[0]
            problems.append(
                f"the newest '{name}' ({version}) was made in environment "
                f"'{other}', this run's is '{env}': run `kedro run --pipelines "
                f"{producer(name)} --env {env}` first, or pin it with "
                f"--load-versions {name}:{version} to use it anyway"
            )
    return problems


#: Kedro's version names: the UTC time of the save.
VERSION_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}\.\d{2}\.\d{2}\.\d{3}Z$")


def _versions_of(dataset: Any) -> list[str]:
    try:
        return [Path(p).parent.name for p in dataset._get_versions()]
    except Exception:  # noqa: BLE001 - not versioned, or not listable
        return []


def _load_version_problems(
    load_versions: dict[str, str], pipeline: Pipeline, catalog: CatalogProtocol
) -> list[str]:
    """One line per ``--load-versions`` entry that cannot be loaded."""
    problems = []
    used = pipeline.datasets()
    for name, version in sorted(load_versions.items()):
        if name not in used:
            problems.append(
                f"--load-versions {name}:{version}: the pipeline reads no dataset "
                f"'{name}'; it reads {', '.join(sorted(pipeline.inputs()))}"
            )
            continue
        known = _versions_of(catalog.get(name))
        shown = ", ".join(known[:5]) or "none saved"
        if not VERSION_NAME.match(version):
            problems.append(
                f"--load-versions {name}:{version}: not a version name (expected "
                f"YYYY-MM-DDThh.mm.ss.sssZ); newest versions: {shown}"
            )
        # A dataset this run saves before reading it (train + evaluate pinned to
        # the run's own agents, as sweeps do) need not exist yet.
        elif version not in known and name in pipeline.inputs():
            problems.append(
                f"--load-versions {name}:{version}: no such version; newest "
                f"versions: {shown}"
            )
    return problems


class TrackingHook:
    """Log resolved parameters and per-iteration metrics to Weights & Biases.

    ``tracking.mode`` is ``offline`` by default (sync later with ``wandb sync``),
    ``disabled`` in tests; ``WANDB_MODE`` in the environment overrides it. No API
    key is ever written: W&B reads ``WANDB_API_KEY`` itself when online.
    """

    def __init__(self) -> None:
        self._run: Any = None
        self._run_params: dict[str, Any] = {}
        self._catalog: CatalogProtocol | None = None

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: CatalogProtocol
    ) -> None:
        """Start a W&B run when the pipeline trains agents."""
        self._run_params, self._catalog = run_params, catalog
        if "train_agents" not in {n.name for n in pipeline.nodes}:
            return
        parameters = catalog.load("parameters")
        settings = parse_parameters(
            TrackingParams, parameters.get("tracking", {}), "tracking"
        )
        mode = os.environ.get("WANDB_MODE") or settings.mode
        if mode == "disabled":
            return
        import wandb

        # A sweep's trials are one W&B group, each named by its trial id.
        experiment = parameters.get("experiment") or {}

        def start(mode: str) -> Any:
            return wandb.init(
                project=settings.project,
                entity=settings.entity,
                mode=mode,
                config=parameters,
                tags=[run_environment(run_params.get("env"))],
                group=experiment.get("sweep"),
                name=experiment.get("trial"),
                reinit="finish_previous",
                # quiet: no 30-line summary at exit; the run's files say it all.
                settings=wandb.Settings(init_timeout=settings.init_timeout, quiet=True),
            )

        try:
            self._run = start(mode)
        except Exception as error:  # noqa: BLE001 - any failure to reach W&B
            if mode != "online":
                raise
            # A training run is worth more than its live dashboard.
            reason = " ".join(str(error).split())[:200]
            logger.warning(
                "W&B could not be reached (%s); logging offline instead, sync "
                "later with `wandb sync wandb/offline-run-*`",
                reason,
            )
            self._run = start("offline")
        tracking.subscribe(self._log)

    def _log(self, metrics: dict[str, float]) -> None:
        self._run.log(tracking.grouped(metrics))

    @hook_impl
    def after_node_run(self, node: Any, outputs: dict[str, Any]) -> None:
        """The evaluation's numbers join the run's summary (``evaluation/...``)."""
        metrics = outputs.get("evaluation_metrics")
        if self._run is None or not isinstance(metrics, dict):
            return
        self._run.summary.update(
            {
                f"evaluation/{key}": value
                for key, value in metrics.items()
                if isinstance(value, int | float) and not isinstance(value, bool)
            }
        )

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        """The file the run saved its agents to becomes the run's model artifact
        (``agents-<env>``, one W&B version per training), with the dataset
        version it was saved as."""
        if self._run is None or self._catalog is None or dataset_name != "agents":
            return
        import wandb

        env = run_environment(self._run_params.get("env"))
        metadata = {
            "dataset_version": self._run_params.get("run_id"),
            "environment": env,
            **{
                key: data.get(key)
                for key in ("trainer", "seed", "max_nodes")
                if isinstance(data, dict)
            },
        }
        artifact = wandb.Artifact(f"agents-{env}", type="model", metadata=metadata)
        artifact.add_file(_saved_path(self._catalog.get(dataset_name)), "agents.pt")
        self._run.log_artifact(artifact)

    @hook_impl
    def after_pipeline_run(self, **kwargs: Any) -> None:
        """Finish the W&B run."""
        self._finish(0)

    @hook_impl
    def on_pipeline_error(self, **kwargs: Any) -> None:
        """Finish the W&B run, marked as failed."""
        self._finish(1)

    def _finish(self, exit_code: int) -> None:
        if self._run is not None:
            tracking.unsubscribe(self._log)
            self._run.finish(exit_code=exit_code)
            self._run = None


class LineageHook:
    """Record which versions of the agents and test data an evaluation used."""

    def __init__(self) -> None:
        self._catalog: CatalogProtocol | None = None

    @hook_impl
    def after_catalog_created(self, catalog: CatalogProtocol) -> None:
        """Keep the catalog to resolve load versions later."""
        self._catalog = catalog

    @hook_impl
    def before_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        """Add ``versions`` (agents, graph_pairs_test) to ``evaluation_metrics``."""
        if dataset_name != "evaluation_metrics" or self._catalog is None:
            return
        versions = {}
        for name in ("agents", "graph_pairs_test"):
            dataset = self._catalog.get(name)
            resolve = getattr(dataset, "resolve_load_version", None)
            versions[name] = resolve() if resolve else None
        data["versions"] = versions


class ReportHook:
    """After a run that evaluated agents, print the headline metrics and paths."""

    REPORT = (
        "evaluation_metrics",
        "evaluation_breakdown",
        "evaluation_transcripts",
        "evaluation_plots",
    )

    @hook_impl
    def after_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: CatalogProtocol
    ) -> None:
        """Echo accuracy, completeness, soundness and where the report files are:
        the versions this run saved, not the newest ones (another run may have
        started later and finished earlier)."""
        if "evaluation_metrics" not in pipeline.all_outputs():
            return
        saved = _saved_path(catalog.get("evaluation_metrics"))
        metrics = (
            json.loads(Path(saved).read_text())
            if saved is not None and Path(saved).is_file()
            else catalog.load("evaluation_metrics")
        )
        click.echo(
            f"\n{metrics['protocol']} ({metrics['trainer']}) on {metrics['pairs']} test "
            f"pairs: accuracy {metrics['accuracy']:.3f}, completeness "
            f"{metrics['completeness']:.3f}, soundness {metrics['soundness']:.3f}, "
            f"timeouts {metrics['timeout_rate']:.3f}, mean rounds "
            f"{metrics['mean_rounds']:.2f}"
        )
        for name in self.REPORT:
            dataset = catalog.get(name)
            click.echo(f"  {name}: {_saved_path(dataset) or dataset}")


def _saved_path(dataset: Any) -> str | None:
    """Where a versioned dataset saved in this run (its save version, the run's
    id), or ``None`` when it is not versioned."""
    version = getattr(dataset, "resolve_save_version", lambda: None)()
    if version is None:
        return None
    return str(dataset._get_versioned_path(version))
