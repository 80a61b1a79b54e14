"""One change at a time: labels, baseline pairing, comparison at one iteration."""

from __future__ import annotations

import math

import pandas as pd

from pvg_pipeline.sweeps.changes import (
    BASELINE,
    change_label,
    changed_keys,
    changes_section,
    changes_summary,
    changes_table,
    pair_baselines,
)
from pvg_pipeline.sweeps.definition import Trial
from pvg_pipeline.sweeps.learning import TrialResult

COMMON = {"trainer.ppo.iterations": 2000, "trainer.eval_interval": 100}


def _run(trial_id: str, seed: int, accuracies: dict[int, float]) -> TrialResult:
    """A trial with a periodic test evaluation at each of ``accuracies``' keys."""
    rows = []
    for iteration in range(1, max(accuracies) + 1):
        row: dict = {"iteration": iteration}
        if iteration in accuracies:
            row |= {
                "test_accuracy": accuracies[iteration],
                "test_hard_balanced_accuracy": accuracies[iteration] - 0.1,
            }
        rows.append(row)
    return TrialResult(
        trial_id=trial_id,
        protocol="pvg",
        control="none",
        seed=seed,
        budget=2000,
        status="running or interrupted",
        history=pd.DataFrame(rows),
    )


def _trial(trial_id: str, seed: int, **changes) -> Trial:
    overrides = {**COMMON, "seed": seed}
    overrides |= {key.replace("__", "."): value for key, value in changes.items()}
    return Trial(trial_id=trial_id, overrides=overrides)


def test_change_label_names_what_the_trial_sets_beyond_common_and_seed():
    both = {
        **COMMON,
        "seed": 1,
        "agents.prover.activation": "tanh",
        "agents.verifier.activation": "tanh",
    }
    assert changed_keys(both, COMMON) == {
        "agents.prover.activation": "tanh",
        "agents.verifier.activation": "tanh",
    }
    assert change_label(changed_keys(both, COMMON)) == (
        "agents.{prover,verifier}.activation=tanh"
    )
    one = {"agents.prover.activation": "tanh", "agents.verifier.activation": "relu"}
    assert change_label(one) == (
        "agents.prover.activation=tanh, agents.verifier.activation=relu"
    )
    assert change_label({"trainer.ppo.shared_optimizer": True}) == (
        "trainer.ppo.shared_optimizer=true"
    )
    # A budget of its own is not a change: staged runs set it on every trial.
    staged = {**COMMON, "seed": 0, "trainer.ppo.iterations": 500}
    assert change_label(changed_keys(staged, COMMON)) == BASELINE


def test_a_change_is_paired_only_with_a_baseline_that_differs_by_the_change():
    baselines = [
        _trial("b0", 0),
        _trial("b1", 1),
        _trial("b2-lr", 2, trainer__ppo__learning_rate=0.001),
    ]
    changed = [
        _trial("c0", 0, trainer__ppo__shared_optimizer=True),
        _trial("c1", 1, trainer__ppo__shared_optimizer=True),
        _trial("c2", 2, trainer__ppo__shared_optimizer=True),
    ]
    # Seed 2's only candidate also changed the learning rate: not a fair baseline.
    assert pair_baselines(changed, COMMON, baselines) == {
        "c0": "b0",
        "c1": "b1",
        "c2": None,
    }


def test_every_trial_is_read_at_the_last_iteration_all_reached():
    baselines = [
        (_trial("b0", 0), _run("b0", 0, {100: 0.60, 200: 0.62, 300: 0.70})),
        (_trial("b1", 1), _run("b1", 1, {100: 0.58, 200: 0.64, 300: 0.66})),
        (_trial("b9", 9), _run("b9", 9, {100: 0.9})),  # no change trial: unused
    ]
    changed = [
        (
            _trial("c0", 0, trainer__ppo__shared_optimizer=True),
            _run("c0", 0, {100: 0.61, 200: 0.70}),
        ),
        (
            _trial("c1", 1, trainer__ppo__shared_optimizer=True),
            _run("c1", 1, {100: 0.55, 200: 0.60, 300: 0.80}),
        ),
    ]
    table = changes_table(changed, COMMON, baselines)
    assert (
        table["change"].tolist()
        == [BASELINE] * 2 + ["trainer.ppo.shared_optimizer=true"] * 2
    )
    # c0 reached only 200: everything is compared at 200, not at each trial's end.
    assert table["compared_at"].tolist() == [200] * 4
    assert table["iterations"].tolist() == [300, 300, 200, 300]
    assert table["test_accuracy"].tolist() == [0.62, 0.64, 0.70, 0.60]
    assert math.isclose(table["mean_accuracy_to_compared_at"].iloc[2], 0.655)

    summary = changes_summary(table).set_index("change")
    change = summary.loc["trainer.ppo.shared_optimizer=true"]
    assert change["seeds"] == 2
    # Paired by seed: (0.70 - 0.62 + 0.60 - 0.64) / 2.
    assert math.isclose(change["accuracy_vs_baseline"], 0.02)
    assert math.isclose(change["hard_vs_baseline"], 0.02)
    assert change["seeds_better"] == "1 of 2"
    assert math.isnan(summary.loc[BASELINE, "accuracy_vs_baseline"])

    section = changes_section(table, "changes", "learning", "results/changes.csv")
    assert "iteration 200" in section
    assert "| trainer.ppo.shared_optimizer=true | 2 | 0.650 |" in section


def test_trials_not_started_are_left_out_of_the_comparison():
    def empty(trial_id: str) -> TrialResult:
        result = _run(trial_id, 0, {1: 0.5})
        result.history = pd.DataFrame()
        return result

    baselines = [(_trial("b0", 0), _run("b0", 0, {100: 0.6}))]
    changed = [
        (_trial("c0", 0, protocol__decisions_from="min_rounds"), empty("c0")),
        (
            _trial("c1", 0, trainer__ppo__value_loss="smooth_l1"),
            _run("c1", 0, {100: 0.7}),
        ),
    ]
    table = changes_table(changed, COMMON, baselines)
    assert table["compared_at"].tolist() == [100, pd.NA, 100]
    summary = changes_summary(table).set_index("change")
    assert summary.loc["protocol.decisions_from=min_rounds", "seeds"] == 0
    assert math.isclose(
        summary.loc["trainer.ppo.value_loss=smooth_l1", "accuracy_vs_baseline"], 0.1
    )

    nothing = changes_table([changed[0]], COMMON, [(_trial("b0", 0), empty("b0"))])
    assert nothing["compared_at"].isna().all()
    assert "no trial evaluated yet" in changes_section(nothing, "c", "learning", "x")


def test_a_trial_still_running_does_not_drag_the_comparison_back():
    def completed(result: TrialResult) -> TrialResult:
        result.status = "completed"
        return result

    baselines = [
        (_trial("b0", 0), completed(_run("b0", 0, {100: 0.6, 200: 0.7, 300: 0.8}))),
        (_trial("b1", 1), _run("b1", 1, {100: 0.5})),  # running, at 100 so far
    ]
    changed = [
        (
            _trial("c0", 0, trainer__ppo__shared_optimizer=True),
            completed(_run("c0", 0, {100: 0.6, 200: 0.6, 300: 0.9})),
        ),
        (
            _trial("c1", 1, trainer__ppo__shared_optimizer=True),
            completed(_run("c1", 1, {100: 0.5, 200: 0.5, 300: 0.5})),
        ),
    ]
    table = changes_table(changed, COMMON, baselines)
    assert table["compared_at"].tolist() == [300, pd.NA, 300, 300]
    assert table["test_accuracy"].iloc[[0, 2, 3]].tolist() == [0.8, 0.9, 0.5]


def test_the_baseline_covers_the_seeds_the_change_has_results_for():
    def not_started(result: TrialResult) -> TrialResult:
        result.status, result.history = "not started", pd.DataFrame()
        return result

    baselines = [
        (_trial("b0", 0), _run("b0", 0, {100: 0.9})),
        (_trial("b1", 1), _run("b1", 1, {100: 0.6})),
    ]
    changed = [
        (
            _trial("c0", 0, trainer__ppo__shared_optimizer=True),
            not_started(_run("c0", 0, {1: 0})),
        ),
        (
            _trial("c1", 1, trainer__ppo__shared_optimizer=True),
            _run("c1", 1, {100: 0.7}),
        ),
    ]
    table = changes_table(changed, COMMON, baselines)
    assert table[table["change"] == BASELINE]["trial_id"].tolist() == ["b1"]
    summary = changes_summary(table).set_index("change")
    assert summary.loc[BASELINE, "seeds"] == 1
