"""``docs/results.md`` from the learning table alone: summary, targets, tables.

Every figure in the page is computed here from the CSV that
``scripts/learning_results.py`` writes, so the page cannot drift from the data.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from pvg_pipeline.sweeps.definition import CONTROLS
from pvg_pipeline.sweeps.learning import (
    LAST_EVALUATIONS,
    PROVER_COLUMNS,
    TARGET_ACCURACY,
)

#: Target (a): this many pvg seeds of :data:`SEEDS_PLANNED` reach the accuracy.
SEEDS_REQUIRED = 4
SEEDS_PLANNED = 5
#: Target (a): ... within this many PPO iterations.
ITERATION_LIMIT = 5000
#: Target (b): pvg's lead in hard balanced accuracy over every control.
HARD_MARGIN = 0.10
#: Controls pvg is compared with in target (b).
BASELINES = ("random_prover", "solo_ppo", "solo_supervised")

REACHED, NOT_REACHED, NOT_MEASURED = "reached", "not reached", "not yet measured"
#: Target (a) not met by the iterations run so far, but the seeds may still reach
#: it within the iteration limit.
NOT_YET = "not reached yet"

#: Columns of the per-trial table in the page.
TRIAL_COLUMNS = [
    "control",
    "protocol",
    "seed",
    "status",
    "iterations",
    "test_accuracy",
    "completeness",
    "soundness",
    "accuracy_isomorphic",
    "accuracy_wl1",
    "accuracy_wl2",
    "accuracy_wl3plus",
    "hard_balanced_accuracy",
    "first_iteration_at_0_80",
    "final_mean_accuracy_last5",
    "final_source",
]


def pvg_trials(table: pd.DataFrame) -> pd.DataFrame:
    """The experiment's own trials: the pvg protocol without a control."""
    return table[(table["control"] == "none") & table["protocol"].isin(["pvg", "nip"])]


def _value(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _format(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return (
            str(int(value))
            if value.is_integer() and digits == 0
            else f"{value:.{digits}f}"
        )
    return str(value)


def _mean_std(values: pd.Series) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return "—"
    if len(values) == 1:
        return f"{values.iloc[0]:.3f} (one seed)"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def _iterations(rows: pd.DataFrame) -> str:
    done = pd.to_numeric(rows["iterations"], errors="coerce").dropna()
    if done.empty:
        return "—"
    low, high = int(done.min()), int(done.max())
    return str(low) if low == high else f"{low}–{high}"


def control_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per control: trials, completed, iterations run, mean ± std over seeds."""
    rows = []
    for control in [c for c in CONTROLS if c in set(table["control"])]:
        group = table[table["control"] == control]
        rows.append(
            {
                "control": control,
                "trials": len(group),
                "completed": int((group["status"] == "completed").sum()),
                "iterations": _iterations(group),
                "final_mean_accuracy_last5": _mean_std(
                    group["final_mean_accuracy_last5"]
                ),
                "hard_balanced_accuracy": _mean_std(group["hard_balanced_accuracy"]),
            }
        )
    return pd.DataFrame(rows)


def _seed(row: Any) -> str:
    seed = _value(row.seed)
    return f"seed {int(seed)}" if not math.isnan(seed) else f"trial {row.trial_id}"


def _first_crossing(row: Any) -> str:
    first = _value(row.first_iteration_at_0_80)
    if not math.isnan(first):
        return f"{_seed(row)} at iteration {int(first)}"
    evaluated = _value(getattr(row, "evaluations", 1))
    return f"{_seed(row)} {'never' if evaluated else 'not evaluated yet'}"


def accuracy_target(table: pd.DataFrame) -> tuple[str, str]:
    """Target (a): verdict and the sentence saying why."""
    pvg = pvg_trials(table)
    if pvg.empty:
        return NOT_MEASURED, "The sweep has no pvg trial yet."
    final = pd.to_numeric(pvg["final_mean_accuracy_last5"], errors="coerce")
    steps = pd.to_numeric(pvg["iterations"], errors="coerce")
    good = (final >= TARGET_ACCURACY) & (steps <= ITERATION_LIMIT)
    completed = pvg["status"] == "completed"
    good_done = int((good & completed).sum())
    # A seed has failed only once it ran the whole iteration limit: a trial
    # completed with a smaller budget continues when the budget is raised.
    exhausted = completed & (steps >= ITERATION_LIMIT)
    failed_done = int((~good & exhausted).sum())
    if good_done >= SEEDS_REQUIRED:
        verdict = REACHED
    elif len(pvg) - failed_done < SEEDS_REQUIRED:
        verdict = NOT_REACHED
    elif bool(completed.all()):
        verdict = NOT_YET
    else:
        verdict = NOT_MEASURED
    first = [_first_crossing(r) for r in pvg.itertuples()]
    ran = [
        f"{_seed(r)}: {_format(_value(r.iterations), 0)} ({r.status})"
        for r in pvg.itertuples()
    ]
    sentence = (
        f"{int(good.sum())} of {len(pvg)} pvg seeds have a final mean test accuracy "
        f"(last {LAST_EVALUATIONS} evaluations) ≥ {TARGET_ACCURACY:.2f} within {ITERATION_LIMIT} "
        f"iterations, {good_done} of them completed (needed: {SEEDS_REQUIRED} of "
        f"{SEEDS_PLANNED}). First evaluation at ≥ {TARGET_ACCURACY:.2f}: "
        f"{'; '.join(first)}. Iterations run: {'; '.join(ran)}."
    )
    return verdict, sentence


def hard_accuracy_target(table: pd.DataFrame) -> tuple[str, str]:
    """Target (b): verdict and one clause per control."""
    pvg = pvg_trials(table)
    pvg_mean = pd.to_numeric(pvg["hard_balanced_accuracy"], errors="coerce").mean()
    clauses, verdicts = [], []
    for control in BASELINES:
        group = table[table["control"] == control]
        mean = pd.to_numeric(group["hard_balanced_accuracy"], errors="coerce").mean()
        involved = pd.concat([pvg, group])
        done = int((involved["status"] == "completed").sum())
        if math.isnan(pvg_mean) or math.isnan(mean):
            verdicts.append(NOT_MEASURED)
            clauses.append(f"vs {control}: {NOT_MEASURED} (no hard balanced accuracy)")
            continue
        lead = (pvg_mean - mean) * 100
        outcome = REACHED if lead >= HARD_MARGIN * 100 else NOT_REACHED
        clause = (
            f"vs {control}: {pvg_mean:.3f} against {mean:.3f}, "
            f"{lead:+.1f} points over {len(group)} seed{'s' * (len(group) != 1)} "
            f"(iterations run: {_iterations(group)})"
        )
        if done < len(involved):
            # Unfinished trials may still move the means either way.
            clauses.append(
                f"{clause}, {outcome} so far with {done} of {len(involved)} trials "
                "completed"
            )
            verdicts.append(NOT_MEASURED)
        else:
            clauses.append(f"{clause}: {outcome}")
            verdicts.append(outcome)
    if NOT_REACHED in verdicts:
        verdict = NOT_REACHED
    elif NOT_MEASURED in verdicts:
        verdict = NOT_MEASURED
    else:
        verdict = REACHED
    sentence = (
        f"pvg ({len(pvg)} seeds, iterations run: {_iterations(pvg)}) must lead every "
        f"control by ≥ {HARD_MARGIN * 100:.0f} points of mean hard balanced "
        f"accuracy: {'; '.join(clauses)}."
    )
    return verdict, sentence


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table; missing values as ``—``."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, row, strict=True):
            whole = column in ("seed", "iterations", "first_iteration_at_0_80")
            cells.append(_format(_value(value) if whole else value, 0 if whole else 3))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_markdown(
    table: pd.DataFrame,
    env: str,
    sweep: str,
    figure: str = "results/learning.png",
    csv: str = "results/learning.csv",
    where: str | None = None,
    sections: tuple[str, ...] = (),
) -> str:
    """The whole results page, from the learning table only (``where``: a sentence
    saying on which machine the trials ran, printed as given; ``sections``: further
    Markdown sections placed after the learning curves)."""
    counts = table["status"].value_counts()
    status = ", ".join(f"{count} {name}" for name, count in counts.items())
    accuracy_verdict, accuracy_sentence = accuracy_target(table)
    hard_verdict, hard_sentence = hard_accuracy_target(table)
    trials = table.sort_values(["control", "seed"], key=_control_order)
    return "\n".join(
        [
            "# Results: the learning experiment",
            "",
            f"Generated by `scripts/learning_results.py --env {env} --sweep {sweep}` "
            f"from [`{csv}`]({csv}); every number below comes from that file. "
            f"Re-run the script to refresh it. Trials: {len(table)} ({status}).",
            "",
            *([f"Where the trials ran: {where}", ""] if where else []),
            "## Targets",
            "",
            f"**(a) pvg reaches a final mean test accuracy ≥ {TARGET_ACCURACY:.2f} in "
            f"at least {SEEDS_REQUIRED} of {SEEDS_PLANNED} seeds within "
            f"{ITERATION_LIMIT} iterations: {accuracy_verdict}.** {accuracy_sentence}",
            "",
            f"**(b) pvg beats random_prover, solo_ppo and solo_supervised by ≥ "
            f"{HARD_MARGIN * 100:.0f} points of hard balanced accuracy (mean over "
            f"seeds): {hard_verdict}.** {hard_sentence}",
            "",
            "## Per control (mean ± standard deviation over seeds)",
            "",
            markdown_table(control_summary(table)),
            "",
            "## Learning curves",
            "",
            f"![Test accuracy and hard balanced accuracy over training]({figure})",
            "",
            *prover_section(table),
            *sections,
            "## Per trial",
            "",
            markdown_table(trials[[c for c in TRIAL_COLUMNS if c in trials]]),
            "",
            "Final columns (`test_accuracy` … `hard_balanced_accuracy`) come from the "
            "trial's evaluation of its final agents when it has one "
            "(`final_source` = evaluation), otherwise from its last periodic "
            "evaluation during training (periodic). The hard balanced accuracy is the "
            "mean of the accuracy on isomorphic pairs and on pairs of WL score ≥ 3. "
            "`final_mean_accuracy_last5` is the mean test accuracy of the last five "
            "periodic evaluations; `first_iteration_at_0_80` the first periodic "
            f"evaluation with test accuracy ≥ {TARGET_ACCURACY:.2f}. For "
            "solo_supervised, iterations are training epochs.",
            "",
        ]
    )


def prover_section(table: pd.DataFrame) -> list[str]:
    """What each pvg seed's prover says, beside its accuracy (empty without
    evaluated pvg trials)."""
    pvg = pvg_trials(table)
    columns = ["seed", "iterations", "test_accuracy", *PROVER_COLUMNS]
    if not len(pvg) or pvg[list(PROVER_COLUMNS)].isna().all().all():
        return []
    return [
        "## What the prover says",
        "",
        markdown_table(pvg[[c for c in columns if c in pvg]]),
        "",
        "From each trial's evaluation on the test split: "
        "`prover_answer_other_graph` is the share of the prover's answers that "
        "point into the other graph than the verifier's question (an answer in the "
        "same graph tells the verifier nothing about the pair); "
        "`prover_answer_same_wl_colour_other_graph` the share that point into the "
        "other graph at a node of the question's WL colour (what an honest prover "
        "of an isomorphic pair does); `random_prover_accuracy` the verifier's "
        "accuracy with its prover replaced by a uniformly random one (how much it "
        "relies on the prover).",
        "",
    ]


def _control_order(column: pd.Series) -> pd.Series:
    if column.name == "control":
        return column.map({c: i for i, c in enumerate(CONTROLS)}).fillna(len(CONTROLS))
    return column
