"""The learning experiment's per-trial results, from training histories.

Pure functions over data already loaded (see :mod:`pvg_pipeline.sweeps.collect`
for reading a sweep from disk): a history's periodic test-split evaluations, the
final metrics of a trial, and the one-row-per-trial table that
``scripts/learning_results.py`` writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

#: Test accuracy the learning target asks for.
TARGET_ACCURACY = 0.80
#: Accuracy of guessing on the balanced test split.
CHANCE_ACCURACY = 0.5
#: Periodic evaluations averaged into ``final_mean_accuracy_last5``.
LAST_EVALUATIONS = 5

#: Final per-trial columns: table column -> (evaluation metric, history column).
FINAL_COLUMNS = {
    "test_accuracy": ("accuracy", "test_accuracy"),
    "completeness": ("completeness", "test_completeness"),
    "soundness": ("soundness", "test_soundness"),
    "accuracy_isomorphic": ("accuracy_isomorphic", "test_accuracy_isomorphic"),
    "accuracy_wl1": ("accuracy_wl1", "test_accuracy_wl1"),
    "accuracy_wl2": ("accuracy_wl2", "test_accuracy_wl2"),
    "accuracy_wl3plus": ("accuracy_wl3plus", "test_accuracy_wl3plus"),
    "hard_balanced_accuracy": (
        "hard_balanced_accuracy",
        "test_hard_balanced_accuracy",
    ),
}

#: What the prover says and how much the verifier relies on it, from the trial's
#: evaluation (``docs/evaluation.md``): answers in the other graph than the
#: question; answers in the other graph with the question's WL colour; accuracy
#: with the prover replaced by a uniformly random one.
PROVER_COLUMNS = (
    "prover_answer_other_graph",
    "prover_answer_same_wl_colour_other_graph",
    "random_prover_accuracy",
)

#: Columns of the learning table, in order.
COLUMNS = [
    "trial_id",
    "protocol",
    "control",
    "seed",
    "status",
    "iterations",
    "progress_unit",
    "budget",
    "evaluations",
    *FINAL_COLUMNS,
    "first_iteration_at_0_80",
    "final_mean_accuracy_last5",
    *PROVER_COLUMNS,
    "final_source",
    "history_source",
    "parameters",
]


@dataclass
class TrialResult:
    """What is known about one trial of a sweep.

    Attributes
    ----------
    history
        Training history rows (possibly empty); ``test_*`` columns only on the
        rows of a periodic evaluation.
    metrics
        The trial's ``evaluation_metrics``, when it was evaluated.
    breakdown
        The matching ``evaluation_breakdown`` (accuracy per WL score), if any.
    status
        ``completed``, ``running or interrupted``, ``failed`` or ``not started``.
    parameters
        Fingerprint of the trial's resolved parameters (its budget aside).
    """

    trial_id: str
    protocol: str | None
    control: str
    seed: int | None
    budget: int | None
    status: str
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    metrics: dict[str, Any] | None = None
    breakdown: pd.DataFrame | None = None
    history_source: str = ""
    #: :func:`~pvg_pipeline.sweeps.definition.parameters_fingerprint` of the
    #: parameters the trial runs with.
    parameters: str = ""


def normalise_history(history: pd.DataFrame) -> pd.DataFrame:
    """A copy with an ``iteration`` column and the current test column names.

    The supervised solo trainer counts epochs; its older histories name the
    verifier's test accuracy ``test_accuracy_verifier``. The hard balanced accuracy
    is derived when only its two parts were recorded.
    """
    frame = history.copy()
    if "iteration" not in frame.columns and "epoch" in frame.columns:
        frame["iteration"] = frame["epoch"]
    if "test_accuracy" not in frame.columns and "test_accuracy_verifier" in frame:
        frame["test_accuracy"] = frame["test_accuracy_verifier"]
    parts = ["test_accuracy_isomorphic", "test_accuracy_wl3plus"]
    if "test_hard_balanced_accuracy" not in frame.columns and set(parts) <= set(
        frame.columns
    ):
        frame["test_hard_balanced_accuracy"] = frame[parts].mean(axis=1, skipna=False)
    return frame


def progress_unit(trial: TrialResult) -> str:
    """``epoch`` for the supervised solo trainer, else ``iteration``."""
    supervised = trial.control == "solo_supervised"
    return "epoch" if supervised or "epoch" in trial.history.columns else "iteration"


def periodic_evaluations(history: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``history`` with a test-split evaluation, by iteration."""
    frame = normalise_history(history)
    if "test_accuracy" not in frame.columns or "iteration" not in frame.columns:
        return pd.DataFrame(columns=["iteration", "test_accuracy"])
    accuracy = pd.to_numeric(frame["test_accuracy"], errors="coerce")
    return frame[accuracy.notna()].sort_values("iteration").reset_index(drop=True)


def first_iteration_at(evaluations: pd.DataFrame, threshold: float) -> int | None:
    """Iteration of the first evaluation with test accuracy >= ``threshold``."""
    reached = evaluations[evaluations["test_accuracy"] >= threshold]
    return int(reached["iteration"].iloc[0]) if len(reached) else None


def final_mean_accuracy(
    evaluations: pd.DataFrame, count: int = LAST_EVALUATIONS
) -> float:
    """Mean test accuracy of the last ``count`` evaluations (NaN without any)."""
    if evaluations.empty:
        return math.nan
    return float(evaluations["test_accuracy"].tail(count).mean())


def breakdown_accuracies(breakdown: pd.DataFrame | None) -> dict[str, float]:
    """Accuracy on isomorphic pairs and per WL group from an evaluation breakdown.

    WL scores 3 and above are pooled, weighted by their number of pairs, as the
    periodic evaluation does.
    """
    if breakdown is None or breakdown.empty or "grouping" not in breakdown:
        return {}
    scores = breakdown[breakdown["grouping"] == "wl_score"].copy()
    scores["group"] = pd.to_numeric(scores["group"])

    def pooled(selected: pd.DataFrame) -> float:
        pairs = selected["pairs"].sum()
        if not pairs:
            return math.nan
        return float((selected["accuracy"] * selected["pairs"]).sum() / pairs)

    result = {
        "accuracy_isomorphic": pooled(scores[scores["group"] == -1]),
        "accuracy_wl1": pooled(scores[scores["group"] == 1]),
        "accuracy_wl2": pooled(scores[scores["group"] == 2]),
        "accuracy_wl3plus": pooled(scores[scores["group"] >= 3]),
    }
    result["hard_balanced_accuracy"] = (
        result["accuracy_isomorphic"] + result["accuracy_wl3plus"]
    ) / 2
    return result


def _number(value: Any) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def final_metrics(
    metrics: dict[str, Any] | None,
    breakdown: pd.DataFrame | None,
    evaluations: pd.DataFrame,
) -> dict[str, Any]:
    """The per-trial final columns and where they came from.

    The trial's own evaluation (``evaluation_metrics`` and its breakdown) is the
    reference; a column it lacks, or a trial not evaluated yet, takes the last
    periodic evaluation instead.
    """
    last = evaluations.iloc[-1] if len(evaluations) else pd.Series(dtype=float)
    evaluated = {**breakdown_accuracies(breakdown), **(metrics or {})}
    row: dict[str, Any] = {}
    for column, (metric, periodic) in FINAL_COLUMNS.items():
        value = _number(evaluated.get(metric)) if metrics else math.nan
        row[column] = value if not math.isnan(value) else _number(last.get(periodic))
    if metrics:
        row["final_source"] = "evaluation"
    elif len(evaluations):
        row["final_source"] = "periodic"
    else:
        row["final_source"] = ""
    return row


def trial_row(trial: TrialResult) -> dict[str, Any]:
    """One row of the learning table."""
    history = normalise_history(trial.history)
    evaluations = periodic_evaluations(trial.history)
    steps = pd.to_numeric(history.get("iteration", pd.Series(dtype=float)))
    reached = first_iteration_at(evaluations, TARGET_ACCURACY)
    return {
        "trial_id": trial.trial_id,
        "protocol": trial.protocol,
        "control": trial.control,
        "seed": trial.seed,
        "status": trial.status,
        "iterations": int(steps.max()) if steps.notna().any() else 0,
        "progress_unit": progress_unit(trial),
        "budget": trial.budget,
        "evaluations": len(evaluations),
        **final_metrics(trial.metrics, trial.breakdown, evaluations),
        "first_iteration_at_0_80": reached,
        "final_mean_accuracy_last5": final_mean_accuracy(evaluations),
        **{
            column: _number((trial.metrics or {}).get(column))
            for column in PROVER_COLUMNS
        },
        "history_source": trial.history_source,
        "parameters": trial.parameters,
    }


def learning_table(trials: list[TrialResult]) -> pd.DataFrame:
    """One row per trial, columns :data:`COLUMNS`."""
    table = pd.DataFrame([trial_row(t) for t in trials], columns=COLUMNS)
    table["first_iteration_at_0_80"] = table["first_iteration_at_0_80"].astype("Int64")
    return table
