"""Sweep results that outlive the runs: fresh results merged with recorded ones.

The committed result files (``docs/results/*.csv``) are the lasting record of a
sweep: the trials may have run on another machine, or in a checkout whose
``data/`` folder is gone. When the results are written again, each trial's row
comes from whichever source got further: this project's runs, or the recorded
file. A trial run again to the same point replaces its record (on a CPU the same
parameters give the same numbers), a trial not run here keeps it.

Learning curves are recorded the same way, one row per trial and periodic
evaluation, so that the figure can be drawn again without the runs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pvg_pipeline.sweeps.learning import (
    TrialResult,
    periodic_evaluations,
    progress_unit,
)

#: Columns of the recorded learning curves, in order.
CURVE_COLUMNS = [
    "trial_id",
    "label",
    "group",
    "unit",
    "step",
    "test_accuracy",
    "test_hard_balanced_accuracy",
]


def read_recorded(path: Path) -> pd.DataFrame | None:
    """The recorded table at ``path``, or ``None`` when there is none yet."""
    return pd.read_csv(path) if path.is_file() else None


def keep_further(
    fresh: pd.DataFrame, recorded: pd.DataFrame | None
) -> tuple[pd.DataFrame, set[str]]:
    """``fresh`` with each trial's row replaced by the recorded one where that got
    further (more ``iterations``) with the same parameters, and the ids of the
    trials so replaced.

    Both tables have ``trial_id``, ``iterations`` and ``parameters`` (the
    fingerprint of the resolved parameters) columns. A recorded row made with other
    parameters (say the environment's defaults changed since) is never kept. Rows
    stay in ``fresh``'s order (the sweep's); recorded trials that are no longer in
    the sweep are dropped.
    """
    if recorded is None or recorded.empty or "parameters" not in recorded:
        return fresh, set()
    earlier = recorded.drop_duplicates("trial_id", keep="last").set_index("trial_id")
    rows, kept = [], set()
    for _, row in fresh.iterrows():
        trial = row["trial_id"]
        done_here = pd.to_numeric(row["iterations"], errors="coerce")
        if trial in earlier.index and earlier.at[trial, "parameters"] == row.get(
            "parameters"
        ):
            done_before = pd.to_numeric(earlier.at[trial, "iterations"])
            if pd.isna(done_here) or done_before > done_here:
                rows.append(earlier.loc[trial].to_dict() | {"trial_id": trial})
                kept.add(trial)
                continue
        rows.append(row.to_dict())
    return pd.DataFrame(rows, columns=fresh.columns), kept


def curves_table(trials: list[TrialResult]) -> pd.DataFrame:
    """The periodic test-split evaluations of every trial, one row each."""
    frames = []
    for trial in trials:
        evaluations = periodic_evaluations(trial.history)
        if evaluations.empty:
            continue
        group = trial.control if trial.control != "none" else str(trial.protocol)
        frame = pd.DataFrame(
            {
                "trial_id": trial.trial_id,
                "label": f"{group} seed {trial.seed}",
                "group": group,
                "unit": progress_unit(trial),
                "step": evaluations["iteration"].astype(int),
            }
        )
        for column in CURVE_COLUMNS[5:]:
            frame[column] = evaluations.get(column)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    return pd.concat(frames, ignore_index=True)[CURVE_COLUMNS]


def merge_curves(
    fresh: pd.DataFrame, recorded: pd.DataFrame | None, kept: set[str]
) -> pd.DataFrame:
    """Fresh curves, except the ``kept`` trials' which come from ``recorded``."""
    if recorded is None:
        return fresh
    return pd.concat(
        [
            fresh[~fresh["trial_id"].isin(kept)],
            recorded[recorded["trial_id"].isin(kept)],
        ],
        ignore_index=True,
    )[CURVE_COLUMNS]


def curves_for_figure(
    curves: pd.DataFrame, order: list[str]
) -> list[tuple[str, str, pd.DataFrame]]:
    """``(label, group, evaluations)`` per trial in ``order``, as the figure takes
    them (supervised trials on an ``epoch`` axis)."""
    drawn = []
    for trial in order:
        rows = curves[curves["trial_id"] == trial].sort_values("step")
        if rows.empty:
            continue
        unit = str(rows["unit"].iloc[0])
        frame = rows[CURVE_COLUMNS[4:]].rename(columns={"step": unit})
        drawn.append((str(rows["label"].iloc[0]), str(rows["group"].iloc[0]), frame))
    return drawn
