"""The learning experiment's results: per-trial table, targets, page and plots."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
import pytest
import torch

from pvg_pipeline.pvg.reports import learning_curves_figure, training_curves_figure
from pvg_pipeline.sweeps.archive import curves_for_figure, curves_table, keep_further
from pvg_pipeline.sweeps.collect import DATASETS, read_trial
from pvg_pipeline.sweeps.definition import (
    Trial,
    control_of,
    load_sweep,
    training_budget,
)
from pvg_pipeline.sweeps.learning import (
    TrialResult,
    breakdown_accuracies,
    final_metrics,
    learning_table,
    normalise_history,
    periodic_evaluations,
)
from pvg_pipeline.sweeps.learning_report import (
    NOT_MEASURED,
    NOT_REACHED,
    NOT_YET,
    REACHED,
    accuracy_target,
    control_summary,
    hard_accuracy_target,
    results_markdown,
)


def _history(accuracies: list[float], every: int = 100, hard: float = 0.6) -> list:
    """PPO rows; a test evaluation every ``every`` iterations with ``accuracies``."""
    rows = []
    for iteration in range(1, every * len(accuracies) + 1):
        row = {"iteration": iteration, "verifier_accuracy": 0.5}
        if iteration % every == 0:
            accuracy = accuracies[iteration // every - 1]
            row |= {
                "test_accuracy": accuracy,
                "test_accuracy_isomorphic": hard + 0.1,
                "test_accuracy_wl3plus": hard - 0.1,
                "test_hard_balanced_accuracy": hard,
            }
        rows.append(row)
    return rows


def _trial(control="none", seed=0, status="completed", accuracies=(0.5,), **kw):
    protocol = {"solo_ppo": "solo_verifier"}.get(control, "pvg")
    return TrialResult(
        trial_id=f"t-{control}-{seed}",
        protocol=protocol,
        control=control,
        seed=seed,
        budget=2000,
        status=status,
        history=pd.DataFrame(_history(list(accuracies), **kw)),
    )


def test_periodic_evaluations_first_crossing_and_final_mean():
    accuracies = [0.5, 0.6, 0.79, 0.81, 0.7, 0.9, 0.85, 0.8, 0.95, 0.9]
    (row,) = learning_table([_trial(accuracies=accuracies)]).to_dict("records")
    assert row["evaluations"] == 10
    assert row["iterations"] == 1000
    # 0.79 at 300 is below the target; the first crossing is at 400.
    assert row["first_iteration_at_0_80"] == 400
    assert row["final_mean_accuracy_last5"] == pytest.approx(np.mean(accuracies[-5:]))
    assert row["test_accuracy"] == 0.9  # last periodic: no evaluation_metrics
    assert row["final_source"] == "periodic"
    never = learning_table([_trial(accuracies=[0.5, 0.7])])
    assert pd.isna(never["first_iteration_at_0_80"].iloc[0])


def test_histories_of_older_and_supervised_runs_are_normalised():
    older = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "test_accuracy_verifier": [0.5, 0.6, 0.7],
            "test_accuracy_isomorphic": [0.4, 0.6, 0.8],
            "test_accuracy_wl3plus": [0.2, 0.4, 0.6],
        }
    )
    frame = normalise_history(older)
    assert frame["iteration"].tolist() == [1, 2, 3]
    assert frame["test_accuracy"].tolist() == [0.5, 0.6, 0.7]
    assert frame["test_hard_balanced_accuracy"].tolist() == pytest.approx(
        [0.3, 0.5, 0.7]
    )
    # Without any test column there is nothing to evaluate, and no error.
    assert periodic_evaluations(pd.DataFrame({"iteration": [1, 2]})).empty
    trial = TrialResult("t", "pvg", "solo_supervised", 0, 3, "completed", older)
    (row,) = learning_table([trial]).to_dict("records")
    assert (row["progress_unit"], row["iterations"]) == ("epoch", 3)
    ((label, group, curve),) = curves_for_figure(curves_table([trial]), ["t"])
    assert (label, group) == ("solo_supervised seed 0", "solo_supervised")
    assert "epoch" in curve and "iteration" not in curve  # own axis in the plot


def test_breakdown_pools_wl_scores_three_and_above_by_pairs():
    breakdown = pd.DataFrame(
        {
            "grouping": ["wl_score"] * 5 + ["graph_size"],
            "group": [-1, 1, 2, 3, 4, 8],
            "pairs": [50, 5, 10, 10, 30, 99],
            "accuracy": [0.8, 1.0, 0.9, 0.5, 1.0, 0.0],
        }
    )
    accuracies = breakdown_accuracies(breakdown)
    assert accuracies["accuracy_wl3plus"] == pytest.approx((5 + 30) / 40)
    assert accuracies["accuracy_isomorphic"] == 0.8
    assert accuracies["hard_balanced_accuracy"] == pytest.approx((0.8 + 0.875) / 2)


def test_final_columns_prefer_the_trials_evaluation():
    evaluations = periodic_evaluations(pd.DataFrame(_history([0.6, 0.7], hard=0.6)))
    metrics = {"accuracy": 0.91, "completeness": 0.95, "soundness": 0.87}
    breakdown = pd.DataFrame(
        {
            "grouping": ["wl_score"] * 2,
            "group": [-1, 3],
            "pairs": [10, 10],
            "accuracy": [1.0, 0.5],
        }
    )
    row = final_metrics(metrics, breakdown, evaluations)
    assert row["final_source"] == "evaluation"
    assert (row["test_accuracy"], row["soundness"]) == (0.91, 0.87)
    assert row["hard_balanced_accuracy"] == 0.75  # from the breakdown, not 0.6
    # A metric the evaluation lacks falls back to the last periodic evaluation.
    row = final_metrics(metrics, None, evaluations)
    assert row["hard_balanced_accuracy"] == 0.6
    assert row["accuracy_wl1"] != row["accuracy_wl1"]  # NaN: recorded nowhere
    own = final_metrics({**metrics, "hard_balanced_accuracy": 0.42}, None, evaluations)
    assert own["hard_balanced_accuracy"] == 0.42


def _table(rows: list[dict]) -> pd.DataFrame:
    defaults = {"protocol": "pvg", "status": "completed", "iterations": 2000}
    table = pd.DataFrame([{**defaults, **row} for row in rows])
    table["trial_id"] = [f"t{i}" for i in range(len(table))]
    return table


def _pvg(finals, statuses=None, firsts=None):
    statuses = statuses or ["completed"] * len(finals)
    firsts = firsts or [500] * len(finals)
    return [
        {
            "control": "none",
            "seed": seed,
            "final_mean_accuracy_last5": final,
            "status": status,
            "first_iteration_at_0_80": first if final >= 0.8 else None,
            "hard_balanced_accuracy": 0.9,
        }
        for seed, (final, status, first) in enumerate(
            zip(finals, statuses, firsts, strict=True)
        )
    ]


def test_accuracy_target_counts_completed_seeds():
    verdict, text = accuracy_target(
        _table(_pvg([0.85, 0.82, 0.9, 0.81, 0.6], firsts=[700, 900, 400, 1600, 0]))
    )
    assert verdict == REACHED
    assert "4 of 5 pvg seeds" in text
    assert "seed 3 at iteration 1600" in text and "seed 4 never" in text
    assert "seed 4: 2000 (completed)" in text
    two_fail = _table(_pvg([0.85, 0.82, 0.9, 0.6, 0.7]))
    # After 2 000 of the 5 000 allowed iterations the two may still get there.
    assert accuracy_target(two_fail)[0] == NOT_YET
    two_fail["iterations"] = 5000
    assert accuracy_target(two_fail)[0] == NOT_REACHED
    running = _table(
        _pvg(
            [0.85, 0.82, 0.9, 0.6, 0.95],
            ["completed"] * 3 + ["running or interrupted"] * 2,
        )
    )
    verdict, text = accuracy_target(running)
    assert verdict == NOT_MEASURED  # 3 done; the running ones may still decide it
    assert "4 of 5 pvg seeds" in text and "3 of them completed" in text
    assert accuracy_target(_table([{"control": "solo_ppo"}]))[0] == NOT_MEASURED
    fresh = _table(_pvg([math.nan]))
    fresh["evaluations"], fresh["status"] = 0, "not started"
    verdict, text = accuracy_target(fresh)
    assert "seed 0 not evaluated yet" in text and "seed 0: 2000 (not started)" in text


def _hard(pvg, random, solo_ppo, solo_supervised, status="completed"):
    rows = []
    for control, values in [
        ("none", pvg),
        ("random_prover", random),
        ("solo_ppo", solo_ppo),
        ("solo_supervised", solo_supervised),
    ]:
        rows += [
            {
                "control": control,
                "seed": seed,
                "hard_balanced_accuracy": value,
                "status": status if control == "solo_ppo" else "completed",
            }
            for seed, value in enumerate(values)
        ]
    return _table(rows)


def test_hard_accuracy_target_compares_means_over_seeds():
    verdict, text = hard_accuracy_target(
        _hard([0.9, 0.8], [0.6, 0.7, 0.5], [0.7, 0.6, 0.7], [0.65, 0.7, 0.72])
    )
    assert verdict == REACHED
    assert "vs random_prover: 0.850 against 0.600, +25.0 points" in text
    verdict, text = hard_accuracy_target(_hard([0.9, 0.8], [0.6], [0.7], [0.8, 0.78]))
    assert verdict == NOT_REACHED
    assert "vs solo_supervised: 0.850 against 0.790, +6.0 points" in text
    assert "not reached" in text
    provisional = _hard([0.9], [0.5], [0.5], [0.5], status="running or interrupted")
    verdict, text = hard_accuracy_target(provisional)
    assert verdict == NOT_MEASURED
    assert "reached so far with 1 of 2 trials completed" in text
    missing = _hard([0.9], [0.5], [math.nan], [0.5])
    assert hard_accuracy_target(missing)[0] == NOT_MEASURED


def test_results_page_is_generated_from_the_csv(tmp_path):
    trials = [
        _trial("none", seed, accuracies=[0.6, 0.8, 0.85, 0.9, 0.9, 0.9], hard=0.9)
        for seed in range(5)
    ]
    trials += [_trial("random_prover", s, accuracies=[0.5], hard=0.5) for s in (0, 1)]
    trials += [_trial("solo_ppo", 0, accuracies=[0.6], hard=0.55)]
    trials += [_trial("solo_supervised", 0, "running or interrupted", [0.7], hard=0.7)]
    csv = tmp_path / "learning.csv"
    learning_table(trials).to_csv(csv, index=False)
    table = pd.read_csv(csv)
    page = results_markdown(table, "gi_ppo", "learning", where="a 2-core CPU")
    assert "Where the trials ran: a 2-core CPU" in page
    assert "Where the trials ran" not in results_markdown(table, "gi_ppo", "x")
    assert "**(a) pvg reaches" in page and f": {REACHED}.**" in page
    assert "5 of 5 pvg seeds" in page and "seed 2 at iteration 200" in page
    # (b) is provisional while the supervised control is still training.
    assert f"accuracy (mean over seeds): {NOT_MEASURED}.**" in page
    assert "vs solo_ppo: 0.900 against 0.550, +35.0 points" in page
    summary = control_summary(table).set_index("control")
    assert summary.loc["none", "final_mean_accuracy_last5"] == "0.870 ± 0.000"
    assert summary.loc["random_prover", "trials"] == 2
    assert summary.loc["solo_supervised", "completed"] == 0
    assert "| none | 5 | 5 | 600 | 0.870 ± 0.000 | 0.900 ± 0.000 |" in page
    assert page.count("| none | pvg |") == 5  # one row per pvg trial


def test_learning_curves_figure_draws_one_line_per_trial_and_references():
    trials = [_trial("none", s, accuracies=[0.6, 0.8]) for s in (0, 1)]
    trials.append(_trial("random_prover", 0, accuracies=[0.5, 0.5]))
    supervised = pd.DataFrame({"epoch": [1, 2], "test_accuracy": [0.6, 0.7]})
    trials.append(
        TrialResult("s", "pvg", "solo_supervised", 0, 2, "completed", supervised)
    )
    order = [t.trial_id for t in trials]
    figure = learning_curves_figure(
        curves_for_figure(curves_table(trials), order), title="curves"
    )
    accuracy, hard = figure.axes[:2]
    assert accuracy.get_xlabel() == "PPO iteration"
    assert "hard balanced accuracy" in hard.get_ylabel()
    assert [line.get_ydata()[0] for line in accuracy.lines[:2]] == [0.8, 0.5]
    assert len(accuracy.lines) == 2 + 3  # references + three PPO trials
    legend = [t.get_text() for t in accuracy.get_legend().get_texts()]
    assert legend == ["target 0.80", "chance 0.5", "pvg", "random_prover"] + [
        "solo_supervised"
    ]
    # The supervised trial's epochs are on a top axis of their own.
    top = [a for a in figure.axes if a.get_xlabel().startswith("epoch")]
    assert len(top) == 1 and len(top[0].lines) == 1
    assert figure._suptitle.get_text() == "curves"


def test_training_curves_figure_plots_what_is_recorded():
    rows = _history([0.6, 0.8], every=2)
    for row in rows:
        for agent in ("prover", "verifier"):
            row[f"approx_kl_{agent}"] = 0.01
            row[f"entropy_{agent}"] = 1.0
    figure = training_curves_figure(pd.DataFrame(rows), "Training curves (pvg)")
    panels = {axis.get_title(): axis for axis in figure.axes}
    assert len(panels["Test split"].lines) == 2  # accuracy and hard balanced
    test_line = panels["Test split"].lines[0]
    assert list(test_line.get_xdata()) == [2, 4]  # only the evaluated iterations
    assert len(panels["Approximate KL divergence"].lines) == 2
    assert panels["Policy entropy"].get_xlabel() == "iteration"
    empty = panels["Clip fraction"]
    assert not empty.lines and empty.texts[0].get_text() == "not recorded"
    # An old history without any of these columns still plots.
    bare = training_curves_figure(pd.DataFrame({"iteration": [1, 2]}))
    assert all(not axis.lines for axis in bare.axes)


def test_controls_and_budgets_from_resolved_parameters(tmp_path):
    base = {
        "protocol": {"name": "pvg"},
        "agents": {"prover": {"type": "neural"}},
        "trainer": {
            "name": "ppo",
            "ppo": {"iterations": 7},
            "solo_agent": {"epochs": 3},
        },
    }
    assert control_of(base) == "none"
    random = {**base, "agents": {"prover": {"type": "random"}}}
    assert control_of(random) == "random_prover"
    assert control_of({**base, "protocol": {"name": "solo_verifier"}}) == "solo_ppo"
    supervised = {**random, "trainer": {**base["trainer"], "name": "solo_agent"}}
    assert control_of(supervised) == "solo_supervised"
    assert (training_budget(base), training_budget(supervised)) == (7, 3)
    conf = tmp_path / "conf"
    (conf / "base" / "sweeps").mkdir(parents=True)
    (conf / "base" / "sweeps" / "c.yml").write_text(
        "common: {seed: 1, trainer.ppo.iterations: 9}\n"
        "trials:\n  - {protocol.name: debate}\n  - {seed: 4}\n"
    )
    _, trials = load_sweep(conf, "base", "c", {})
    assert [t.overrides for t in trials] == [
        {"seed": 1, "trainer.ppo.iterations": 9, "protocol.name": "debate"},
        {"seed": 4, "trainer.ppo.iterations": 9},  # a trial's own value wins
    ]


def test_unfinished_trial_is_read_from_its_newest_checkpoint(tmp_path):
    trial = Trial(trial_id="t000-abc", overrides={"seed": 2})
    run = tmp_path / "ckpt" / "sweeps" / "test" / "s" / "t000-abc" / "2026-01-01T00"
    run.mkdir(parents=True)
    for iteration in (100, 200):
        history = _history([0.7] * (iteration // 100))
        torch.save({"history": history}, run / f"iteration_{iteration:07d}.pt")
    paths = {name: tmp_path / "nothing_saved" / name for name in DATASETS}
    parameters = {
        "seed": 2,
        "protocol": {"name": "pvg"},
        "trainer": {"name": "ppo", "ppo": {"iterations": 2000}},
    }
    parameters["trainer"]["checkpoint_dir"] = str(tmp_path / "ckpt")
    state = tmp_path / "state"
    result = read_trial(tmp_path, "test", "s", trial, parameters, paths, [], state)
    assert result.status == "running or interrupted"
    assert result.history_source == "checkpoint iteration_0000200.pt"
    assert len(result.history) == 200 and result.seed == 2
    # A recorded failure with no checkpoint written since is reported as failed.
    state.mkdir()
    (state / "t000-abc.json").write_text(json.dumps({"status": "failed"}))
    os.utime(run / "iteration_0000200.pt", (1, 1))
    result = read_trial(tmp_path, "test", "s", trial, parameters, paths, [], state)
    assert result.status == "failed"
    assert len(result.history) == 200  # its progress is still reported
    nothing = read_trial(
        tmp_path,
        "test",
        "s",
        Trial(trial_id="t1", overrides={}),
        parameters,
        paths,
        [],
        tmp_path / "nostate",
    )
    assert nothing.status == "not started" and nothing.history.empty


def test_recorded_rows_are_kept_where_they_got_further():
    fresh = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d"],
            "status": ["completed", "missing", "completed", "missing"],
            "iterations": [500, 0, 300, 0],
            "test_accuracy": [0.6, float("nan"), 0.55, float("nan")],
            "parameters": ["p", "p", "p", "new"],
        }
    )
    recorded = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d", "gone"],
            "status": ["completed"] * 5,
            "iterations": [500, 500, 500, 500, 500],
            "test_accuracy": [0.1, 0.7, 0.65, 0.8, 0.9],
            "parameters": ["p", "p", "p", "old", "p"],
        }
    )
    merged, kept = keep_further(fresh, recorded)
    # a: run here as far as recorded (fresh wins); b: not run here; c: run less
    # far; d: recorded with other parameters (never kept).
    assert kept == {"b", "c"}
    assert merged["trial_id"].tolist() == ["a", "b", "c", "d"]  # "gone" stays out
    assert merged["test_accuracy"].tolist()[:3] == [0.6, 0.7, 0.65]
    assert pd.isna(merged["test_accuracy"].iloc[3])
    assert keep_further(fresh, None) == (fresh, set())
    # A record without fingerprints (older files) is not trusted.
    assert keep_further(fresh, recorded.drop(columns="parameters"))[1] == set()


def test_what_the_prover_says_comes_from_each_trials_evaluation():
    said = _trial("none", 0, accuracies=[0.9], hard=0.9)
    said.metrics = {
        "accuracy": 0.9,
        "prover_answer_other_graph": 0.8,
        "prover_answer_same_wl_colour_other_graph": 0.75,
        "random_prover_accuracy": 0.55,
    }
    silent = _trial("none", 1, "running or interrupted", [0.6], hard=0.6)
    table = learning_table([said, silent, _trial("random_prover", 0, hard=0.5)])
    assert table.loc[0, "prover_answer_other_graph"] == 0.8
    assert math.isnan(table.loc[1, "random_prover_accuracy"])  # not evaluated yet
    page = results_markdown(table, "gi_ppo", "learning")
    assert "## What the prover says" in page
    assert "| 0 | 100 | 0.900 | 0.800 | 0.750 | 0.550 |" in page
    assert "| 1 | 100 | 0.600 | — | — | — |" in page
    # Without any evaluated pvg trial there is nothing to say.
    assert "## What the prover says" not in results_markdown(
        learning_table([silent]), "gi_ppo", "learning"
    )
