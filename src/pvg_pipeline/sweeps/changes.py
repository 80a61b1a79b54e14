"""One change at a time: trials that each switch one setting, against a baseline.

A *changes* sweep (e.g. ``conf/gi_ppo/sweeps/reference_changes.yml``) lists trials
that each set one group of parameters on top of an environment, for several seeds.
Its baseline is another sweep's trials with the same seeds and no change (the
learning sweep's pvg trials), reused rather than run twice: a change trial is
paired with a baseline trial only when their overrides are identical once the
change is taken out (the PPO budget aside), so nothing else differs.

Trials are compared at one iteration that all of them reached, from their
periodic test-split evaluations, so a staged run (every trial to 500 iterations
first) is compared fairly while it continues.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from pvg_pipeline.sweeps.definition import BUDGET_KEY, Trial
from pvg_pipeline.sweeps.learning import TrialResult, periodic_evaluations

#: The label of the baseline rows.
BASELINE = "baseline (no change)"

#: Columns of the per-trial table, in order.
COLUMNS = [
    "change",
    "seed",
    "trial_id",
    "status",
    "iterations",
    "compared_at",
    "test_accuracy",
    "hard_balanced_accuracy",
    "mean_accuracy_to_compared_at",
    "parameters",
]

#: Keys that say which run a trial is, not what it changes.
NOT_A_CHANGE = ("seed", BUDGET_KEY)


def changed_keys(overrides: dict[str, Any], common: dict[str, Any]) -> dict[str, Any]:
    """The overrides a trial sets beyond the sweep's ``common`` block and its seed."""
    return {
        key: value
        for key, value in overrides.items()
        if key not in NOT_A_CHANGE and common.get(key, object()) != value
    }


def change_label(changes: dict[str, Any]) -> str:
    """Readable name of a change; the same setting for both agents is written once.

    ``{"agents.prover.activation": "tanh", "agents.verifier.activation": "tanh"}``
    becomes ``agents.{prover,verifier}.activation=tanh``.
    """
    if not changes:
        return BASELINE
    parts, done = [], set()
    for key, value in changes.items():
        if key in done:
            continue
        if key.startswith("agents.prover."):
            twin = "agents.verifier." + key.removeprefix("agents.prover.")
            if changes.get(twin, object()) == value:
                done.add(twin)
                key = "agents.{prover,verifier}." + key.removeprefix("agents.prover.")
        text = str(value).lower() if isinstance(value, bool) else str(value)
        parts.append(f"{key}={text}")
    return ", ".join(parts)


def _identity(overrides: dict[str, Any], leave_out: set[str]) -> dict[str, Any]:
    return {
        k: v for k, v in overrides.items() if k != BUDGET_KEY and k not in leave_out
    }


def pair_baselines(
    changed: list[Trial],
    common: dict[str, Any],
    baselines: list[Trial],
) -> dict[str, str | None]:
    """For each change trial, the id of the baseline trial it is compared with.

    A baseline trial qualifies when its overrides equal the change trial's with
    the change removed (budgets aside); ``None`` where none does.
    """
    paired: dict[str, str | None] = {}
    for trial in changed:
        change = set(changed_keys(trial.overrides, common))
        own = _identity(trial.overrides, change)
        paired[trial.trial_id] = next(
            (b.trial_id for b in baselines if _identity(b.overrides, set()) == own),
            None,
        )
    return paired


def evaluation_at(evaluations: pd.DataFrame, iteration: int) -> pd.Series | None:
    """The periodic evaluation at ``iteration`` exactly, if there is one."""
    rows = evaluations[evaluations["iteration"] == iteration]
    return rows.iloc[-1] if len(rows) else None


def common_iteration(trials: list[TrialResult]) -> int | None:
    """The last iteration every evaluated completed trial has a periodic
    evaluation at (every evaluated trial's when none has completed): a trial still
    running (or continuing to a larger budget) does not drag the comparison back
    to where it is now; its row stays empty until it gets there."""
    finished = [t for t in trials if t.status == "completed"]
    reached = [
        set(periodic_evaluations(t.history)["iteration"].astype(int))
        for t in finished or trials
    ]
    reached = [r for r in reached if r]
    if not reached:
        return None
    shared = set.intersection(*reached)
    return max(shared) if shared else None


def _row(label: str, trial: TrialResult, at: int | None) -> dict[str, Any]:
    evaluations = periodic_evaluations(trial.history)
    iterations = int(evaluations["iteration"].max()) if len(evaluations) else 0
    row = evaluation_at(evaluations, at) if at is not None else None
    upto = evaluations[evaluations["iteration"] <= at] if at is not None else None

    def metric(name: str) -> float:
        if row is None or name not in row:
            return math.nan
        return float(pd.to_numeric(row[name], errors="coerce"))

    return {
        "change": label,
        "seed": trial.seed,
        "trial_id": trial.trial_id,
        "status": trial.status,
        "iterations": iterations,
        "compared_at": at if row is not None else None,
        "test_accuracy": metric("test_accuracy"),
        "hard_balanced_accuracy": metric("test_hard_balanced_accuracy"),
        "mean_accuracy_to_compared_at": (
            float(upto["test_accuracy"].mean())
            if upto is not None and len(upto)
            else math.nan
        ),
        "parameters": trial.parameters,
    }


def changes_table(
    changed: list[tuple[Trial, TrialResult]],
    common: dict[str, Any],
    baselines: list[tuple[Trial, TrialResult]],
) -> pd.DataFrame:
    """One row per change trial and per baseline trial paired with one.

    Every row is read at the same iteration (:func:`common_iteration` over the
    rows' trials that have evaluations).
    """
    pairs = pair_baselines([t for t, _ in changed], common, [t for t, _ in baselines])
    # The baseline's mean is over the seeds the change has results for.
    started = {t.trial_id for t, r in changed if r.status != "not started"}
    used = {b for c, b in pairs.items() if b is not None and c in started}
    rows = [(BASELINE, r) for t, r in baselines if t.trial_id in used]
    rows += [(change_label(changed_keys(t.overrides, common)), r) for t, r in changed]
    at = common_iteration([r for _, r in rows])
    table = pd.DataFrame([_row(label, r, at) for label, r in rows], columns=COLUMNS)
    table["compared_at"] = table["compared_at"].astype("Int64")
    return table


def changes_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per change: seeds compared, mean test accuracy and hard balanced accuracy,
    the mean difference to the baseline over the seeds both have, and in how many
    of those seeds the change had the higher test accuracy."""
    baseline = table[table["change"] == BASELINE].set_index("seed")
    rows = []
    for change, group in table.groupby("change", sort=False):
        measured = group.dropna(subset=["test_accuracy"]).set_index("seed")
        row: dict[str, Any] = {
            "change": change,
            "seeds": len(measured),
            "test_accuracy": measured["test_accuracy"].mean(),
            "hard_balanced_accuracy": measured["hard_balanced_accuracy"].mean(),
            "accuracy_vs_baseline": math.nan,
            "hard_vs_baseline": math.nan,
            "seeds_better": "",
        }
        if change != BASELINE:
            accuracy = (measured["test_accuracy"] - baseline["test_accuracy"]).dropna()
            hard = (
                measured["hard_balanced_accuracy"] - baseline["hard_balanced_accuracy"]
            ).dropna()
            if len(accuracy):
                row["accuracy_vs_baseline"] = accuracy.mean()
                row["seeds_better"] = f"{int((accuracy > 0).sum())} of {len(accuracy)}"
            if len(hard):
                row["hard_vs_baseline"] = hard.mean()
        rows.append(row)
    return pd.DataFrame(rows)


def changes_section(
    table: pd.DataFrame, sweep: str, baseline_sweep: str, csv: str
) -> str:
    """The results page's section on a changes sweep, from its table alone."""
    from pvg_pipeline.sweeps.learning_report import markdown_table

    at = table["compared_at"].dropna()
    if at.empty:
        return "\n".join(
            [
                f"## One change at a time: sweep `{sweep}`",
                "",
                f"Sweep `{sweep}`: no trial evaluated yet at an iteration that the "
                "baseline reached.",
                "",
            ]
        )
    summary = changes_summary(table)
    return "\n".join(
        [
            f"## One change at a time: sweep `{sweep}`",
            "",
            f"Sweep `{sweep}` switches one setting per trial on top of the baseline, "
            f"the `{baseline_sweep}` sweep's pvg trials with the same seeds "
            f"(identical parameters apart from the change). Every trial is read at "
            f"iteration {int(at.iloc[0])}, the last periodic test-split evaluation "
            "that all of them reached; per trial in "
            f"[`{csv}`]({csv}). `accuracy_vs_baseline` and `hard_vs_baseline` are "
            "the mean differences to the baseline over the same seeds (hard: the "
            "mean of the accuracy on isomorphic pairs and on pairs of WL score ≥ 3); "
            "`seeds_better` counts the seeds whose test accuracy the change raised.",
            "",
            markdown_table(summary),
            "",
        ]
    )
