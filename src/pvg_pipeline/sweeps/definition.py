"""Sweep definitions: a grid and/or explicit trials over parameter paths.

``conf/<env>/sweeps/<name>.yml``::

    grid:                      # every combination
      seed: [0, 1]
      protocol.name: [pvg, debate]
    trials:                    # and/or explicit trials
      - {seed: 7, protocol.name: mnip}
    common:                    # set in every trial (an own value wins)
      trainer.ppo.iterations: 200
    pipelines: [train, evaluate]
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError

from pvg_pipeline.params import (
    ParameterBlock,
    ParameterError,
    ProjectParameters,
    merge_parameters,
    parse_parameters,
)

PIPELINES = ("data_generation", "train", "evaluate", "compare")


class SweepDefinition(ParameterBlock):
    """What a sweep file may contain."""

    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}
    trials: list[dict[str, Any]] = []
    common: dict[str, Any] = {}
    pipelines: Annotated[list[str], Field(min_length=1)] = ["train", "evaluate"]


class Trial(ParameterBlock):
    """One run of a sweep: its id and the parameter values it sets."""

    trial_id: str
    overrides: dict[str, Any]


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    nested: dict[str, Any] = {}
    for path, value in flat.items():
        node = nested
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


#: The PPO budget is not part of a trial's identity: raising it (in the sweep file
#: or with ``kedro sweep --iterations``) continues each trial from its checkpoint.
BUDGET_KEY = "trainer.ppo.iterations"


def trial_id(index: int, overrides: dict[str, Any]) -> str:
    """Readable, stable id: position plus a hash of the values (budget excluded)."""
    identity = {k: v for k, v in overrides.items() if k != BUDGET_KEY}
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"t{index:03d}-{digest[:8]}"


def budget_of(overrides: dict[str, Any]) -> int | None:
    """The PPO iterations a trial's overrides ask for, if they set them."""
    value = overrides.get(BUDGET_KEY)
    return int(value) if value is not None else None


def sweep_root(project: Path, env: str, name: str) -> Path:
    """Where ``kedro sweep`` keeps a sweep's trial records and results tables."""
    return project / "data" / "08_reporting" / "sweeps" / env / name


def load_sweep(
    conf_source: Path,
    env: str,
    name: str,
    base_parameters: dict[str, Any],
    iterations: int | None = None,
) -> tuple[SweepDefinition, list[Trial]]:
    """Read, validate and expand a sweep; every trial's parameters are checked.

    ``iterations`` replaces every trial's PPO budget for this run (staged runs:
    a later run with a larger budget continues the trials).

    Raises
    ------
    ParameterError
        Unknown sweep keys or pipelines, or a trial whose parameters are invalid
        (unknown path, wrong type, out of range), before anything runs.
    """
    candidates = [conf_source / env / "sweeps" / f"{name}.yml"]
    candidates.append(conf_source / "base" / "sweeps" / f"{name}.yml")
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise ParameterError(
            [f"sweep '{name}' not found; expected {' or '.join(map(str, candidates))}"]
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParameterError([f"{path} is not valid YAML: {error}"]) from None
    definition = parse_parameters(SweepDefinition, raw, f"sweep {name}")
    unknown = [p for p in definition.pipelines if p not in PIPELINES]
    if unknown:
        raise ParameterError(
            [
                f"sweep {name}.pipelines: unknown {unknown}; valid: {', '.join(PIPELINES)}"
            ]
        )
    keys = list(definition.grid)
    combos = [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*definition.grid.values())
    ]
    budget = {BUDGET_KEY: iterations} if iterations is not None else {}
    flat_trials = [
        {**definition.common, **t, **budget}
        for t in (combos if keys else []) + [dict(t) for t in definition.trials]
    ]
    if not flat_trials:
        raise ParameterError(
            [f"sweep {name} defines no trials (empty grid and trials)"]
        )
    trials = []
    for index, overrides in enumerate(flat_trials):
        identifier = trial_id(index, overrides)
        try:
            parse_parameters(
                ProjectParameters,
                merge_parameters(base_parameters, nest(overrides)),
                "",
            )
        except ParameterError as error:
            raise ParameterError(
                [f"sweep {name}, trial {overrides}: {p}" for p in error.problems]
            ) from None
        except ValidationError as error:  # pragma: no cover - parse handles these
            raise ParameterError([str(error)]) from None
        trials.append(Trial(trial_id=identifier, overrides=overrides))
    return definition, trials


#: Values of the ``control`` column: which baseline a trial is, if any.
CONTROLS = ("none", "random_prover", "solo_ppo", "solo_supervised")


def parameters_fingerprint(parameters: dict[str, Any]) -> str:
    """A short hash of a resolved parameter tree, its PPO budget and sweep tags
    aside: equal fingerprints mean the same experiment (possibly run further)."""
    tree = json.loads(json.dumps(parameters, default=str))
    tree.pop("experiment", None)
    (tree.get("trainer") or {}).get("ppo", {}).pop("iterations", None)
    text = json.dumps(tree, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def resolve_trial(base_parameters: dict[str, Any], trial: Trial) -> dict[str, Any]:
    """The full parameter tree a trial runs with (environment + its overrides)."""
    return merge_parameters(base_parameters, nest(trial.overrides))


def control_of(parameters: dict[str, Any]) -> str:
    """Which control a resolved parameter tree is (one of :data:`CONTROLS`).

    The supervised trainer is checked first because it ignores the protocol's
    prover; a solo protocol has no prover whose type could matter.
    """
    trainer = parameters.get("trainer") or {}
    protocol = (parameters.get("protocol") or {}).get("name", "pvg")
    prover = ((parameters.get("agents") or {}).get("prover") or {}).get("type")
    if trainer.get("name") == "solo_agent":
        return "solo_supervised"
    if protocol == "solo_verifier":
        return "solo_ppo"
    if prover == "random":
        return "random_prover"
    return "none"


def training_budget(parameters: dict[str, Any]) -> int | None:
    """Iterations a trial trains for (epochs for the supervised solo trainer)."""
    trainer = parameters.get("trainer") or {}
    if trainer.get("name") == "solo_agent":
        return (trainer.get("solo_agent") or {}).get("epochs")
    return (trainer.get("ppo") or {}).get("iterations")


def select_trials(spec: str, trials: list[Trial]) -> set[str]:
    """Trial ids named by ``spec``: positions in the sweep file, 0-based.

    ``"0-4,9"`` selects the first five trials and the tenth.

    Raises
    ------
    ParameterError
        A part that is not a position or a range, or a position past the last trial.
    """
    chosen: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise ParameterError(
                [f"--trials {spec}: '{part}' is not a position or a range like 0-4"]
            )
        first = int(match[1])
        last = int(match[2]) if match[2] else first
        if first > last or last >= len(trials):
            raise ParameterError(
                [
                    f"--trials {spec}: '{part}' is outside the sweep's "
                    f"{len(trials)} trials (positions 0-{len(trials) - 1})"
                ]
            )
        chosen.update(range(first, last + 1))
    return {trials[i].trial_id for i in sorted(chosen)}
