"""Results of the learning sweep: per-trial CSV, learning curves, results page.

Run after or during ``kedro sweep --env gi_ppo --sweep learning``; unfinished
trials are read from their newest checkpoint::

    python scripts/learning_results.py                       # docs/results.md etc.
    python scripts/learning_results.py --env test --sweep grid --out-dir /tmp/out

Writes ``<out-dir>/results/learning.csv`` (one row per trial),
``<out-dir>/results/learning_curves.csv`` (one row per trial and periodic
evaluation), ``<out-dir>/results/learning.png`` and ``<out-dir>/results.md``, the
page being generated from the CSVs alone. For each one-change-at-a-time sweep the
environment has (``--changes-sweep``, default ``reference_changes``,
``learning_rate`` and ``prover_answers``), its trials are compared with the learning sweep's pvg trials of
the same seeds in ``<out-dir>/results/<changes sweep>.csv`` and a section of the
page.

The files already in ``<out-dir>`` are the record of trials run elsewhere: a trial
not run in this project, or run less far, keeps its recorded row and curve, so
results accumulate over machines and checkouts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from pvg_pipeline.pvg.reports import learning_curves_figure
from pvg_pipeline.sweeps.archive import (
    curves_for_figure,
    curves_table,
    keep_further,
    merge_curves,
    read_recorded,
)
from pvg_pipeline.sweeps.changes import changes_section, changes_table
from pvg_pipeline.sweeps.collect import collect_sweep
from pvg_pipeline.sweeps.learning import (
    CHANCE_ACCURACY,
    TARGET_ACCURACY,
    learning_table,
)
from pvg_pipeline.sweeps.learning_report import results_markdown

#: One-change-at-a-time sweeps reported beside the learning sweep when present.
CHANGES_SWEEPS = ("reference_changes", "learning_rate", "prover_answers")


def write_changes(
    project: Path,
    env: str,
    sweep: str,
    baselines: list,
    folder: Path,
) -> tuple[Path, str] | None:
    """The changes sweep's CSV and page section (``None`` without that sweep).

    Trials not run in this project keep their recorded rows.
    """
    if not (project / "conf" / env / "sweeps" / f"{sweep}.yml").is_file():
        return None
    definition, changed = collect_sweep(project, env, sweep)
    csv = folder / f"{sweep}.csv"
    fresh = changes_table(changed, definition.common, baselines)
    table, _ = keep_further(fresh, read_recorded(csv))
    table.to_csv(csv, index=False)
    section = changes_section(
        pd.read_csv(csv), sweep, "learning", f"results/{csv.name}"
    )
    return csv, section


def write_results(
    project: Path,
    env: str,
    sweep: str,
    out_dir: Path,
    where: str | None = None,
    changes_sweeps: tuple[str, ...] = CHANGES_SWEEPS,
) -> list[Path]:
    """Read the sweeps' trials and write the CSVs, the figure and the page.

    A trial not run in this project (or run less far than recorded) keeps its
    row and learning curve from the files already in ``out_dir``.
    """
    _, collected = collect_sweep(project, env, sweep)
    trials = [result for _, result in collected]
    folder = out_dir / "results"
    folder.mkdir(parents=True, exist_ok=True)
    csv, curves_csv, png, page = (
        folder / "learning.csv",
        folder / "learning_curves.csv",
        folder / "learning.png",
        out_dir / "results.md",
    )
    table, kept = keep_further(learning_table(trials), read_recorded(csv))
    table.to_csv(csv, index=False)
    curves = merge_curves(curves_table(trials), read_recorded(curves_csv), kept)
    curves.to_csv(curves_csv, index=False)
    figure = learning_curves_figure(
        curves_for_figure(curves, list(table["trial_id"])),
        target=TARGET_ACCURACY,
        chance=CHANCE_ACCURACY,
        title=f"Learning curves on the test split (sweep {sweep}, environment {env})",
    )
    figure.savefig(png, dpi=120)
    baselines = [(t, r) for t, r in collected if r.control == "none"]
    changes = [
        written
        for name in changes_sweeps
        if (written := write_changes(project, env, name, baselines, folder))
    ]
    # The page is made from the CSVs as written, never from the live objects.
    page.write_text(
        results_markdown(
            pd.read_csv(csv),
            env,
            sweep,
            "results/learning.png",
            "results/learning.csv",
            where,
            tuple(section for _, section in changes),
        )
    )
    return [csv, curves_csv, png, page, *(path for path, _ in changes)]


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="gi_ppo", help="Kedro environment")
    parser.add_argument("--sweep", default="learning", help="sweep name")
    parser.add_argument("--out-dir", default="docs", type=Path, help="output folder")
    parser.add_argument(
        "--project", default=Path.cwd(), type=Path, help="project folder"
    )
    parser.add_argument(
        "--where", default=None, help="on which machine the trials ran (printed)"
    )
    parser.add_argument(
        "--changes-sweep",
        action="append",
        default=None,
        help="a one-change-at-a-time sweep compared with the learning sweep; "
        f"repeat for several, '' for none (default: {', '.join(CHANGES_SWEEPS)})",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    written = write_results(
        args.project.resolve(),
        args.env,
        args.sweep,
        args.out_dir,
        args.where,
        tuple(
            name
            for name in (args.changes_sweep or CHANGES_SWEEPS)
            if name  # '' alone: no changes sweep
        ),
    )
    sys.stdout.write("".join(f"wrote {path}\n" for path in written))


if __name__ == "__main__":
    main()
