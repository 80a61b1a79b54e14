"""Results of the learning sweep: per-trial CSV, learning curves, results page.

Run after or during ``kedro sweep --env gi_ppo --sweep learning``; unfinished
trials are read from their newest checkpoint::

    python scripts/learning_results.py                       # docs/results.md etc.
    python scripts/learning_results.py --env test --sweep grid --out-dir /tmp/out

Writes ``<out-dir>/results/learning.csv`` (one row per trial),
``<out-dir>/results/learning.png`` and ``<out-dir>/results.md``, the page being
generated from the CSV alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from pvg_pipeline.pvg.reports import learning_curves_figure
from pvg_pipeline.sweeps.collect import collect_trials
from pvg_pipeline.sweeps.learning import (
    CHANCE_ACCURACY,
    TARGET_ACCURACY,
    learning_curves,
    learning_table,
)
from pvg_pipeline.sweeps.learning_report import results_markdown


def write_results(
    project: Path, env: str, sweep: str, out_dir: Path, where: str | None = None
) -> list[Path]:
    """Read the sweep's trials and write the CSV, the figure and the page."""
    trials = collect_trials(project, env, sweep)
    folder = out_dir / "results"
    folder.mkdir(parents=True, exist_ok=True)
    csv, png, page = (
        folder / "learning.csv",
        folder / "learning.png",
        out_dir / "results.md",
    )
    learning_table(trials).to_csv(csv, index=False)
    figure = learning_curves_figure(
        learning_curves(trials),
        target=TARGET_ACCURACY,
        chance=CHANCE_ACCURACY,
        title=f"Learning curves on the test split (sweep {sweep}, environment {env})",
    )
    figure.savefig(png, dpi=120)
    # The page is made from the CSV as written, never from the live objects.
    page.write_text(
        results_markdown(
            pd.read_csv(csv),
            env,
            sweep,
            "results/learning.png",
            "results/learning.csv",
            where,
        )
    )
    return [csv, png, page]


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
    args = parser.parse_args(argv)
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    written = write_results(
        args.project.resolve(), args.env, args.sweep, args.out_dir, args.where
    )
    sys.stdout.write("".join(f"wrote {path}\n" for path in written))


if __name__ == "__main__":
    main()
