"""Parameter validation: every failure kind gives one readable line."""

from __future__ import annotations

import pytest

from pvg_pipeline.config import load_parameters
from pvg_pipeline.params import (
    DataGenerationParams,
    ParameterError,
    ProjectParameters,
    parse_parameters,
)


def _problem(values: dict) -> str:
    with pytest.raises(ParameterError) as error:
        parse_parameters(ProjectParameters, values)
    return error.value.message


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"data_generation": {"edge_probabilities": [0.2, 1.5]}},
            "data_generation.edge_probabilities[1] = 1.5: Input should be less than "
            "or equal to 1",
        ),
        (
            {"data_generation": {"wl_max_iterations": 0}},
            "data_generation.wl_max_iterations = 0: Input should be greater than or "
            "equal to 1",
        ),
        (
            {"data_generation": {"graph_sizes": "seven"}},
            "data_generation.graph_sizes = 'seven': Input should be a valid list",
        ),
        ({"seed": "abc"}, "seed = 'abc': Input should be a valid integer"),
        ({"device": "gpu"}, "device = 'gpu': expected 'auto', 'cpu', 'cuda'"),
        (
            {"data_generation": {"train": {"num_pairs": 0, "seed": 1}}},
            "data_generation.train.num_pairs = 0",
        ),
    ],
)
def test_type_and_range_errors_name_path_value_and_expectation(values, expected):
    message = _problem(values)
    assert message.startswith("invalid parameter ")
    assert expected in message
    assert "\n" not in message  # one problem, one line


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"seed": True}, "seed = True: expected an integer, not a boolean"),
        (
            {"trainer": {"ppo": {"iterations": False}}},
            "trainer.ppo.iterations = False: expected an integer, not a boolean",
        ),
        (
            {"trainer": {"ppo": {"learning_rate": True}}},
            "trainer.ppo.learning_rate = True: expected a number, not a boolean",
        ),
        (
            {"data_generation": {"train": {"num_pairs": True, "seed": 1}}},
            "data_generation.train.num_pairs = True: expected an integer",
        ),
    ],
)
def test_booleans_are_not_numbers(values, expected):
    assert expected in _problem(values)


def test_booleans_stay_valid_where_a_boolean_is_expected():
    parsed = parse_parameters(
        ProjectParameters,
        {"protocol": {"verifier_first": False}, "trainer": {"resume": True}},
    )
    assert parsed.protocol.verifier_first is False and parsed.trainer.resume is True


def test_unknown_keys_are_listed_with_the_valid_ones():
    message = _problem({"data_generation": {"edge_probs": [0.5]}})
    assert "data_generation: unknown key(s) 'edge_probs'" in message
    assert "edge_probabilities" in message
    assert "unknown key(s) 'lr'" in _problem({"lr": 0.1})


def test_proportions_must_sum_to_one_and_fit_the_iterations():
    message = _problem({"data_generation": {"wl_score_proportions": {1: 0.5, 2: 0.4}}})
    assert "wl_score_proportions must sum to 1, got 0.9" in message
    message = _problem(
        {"data_generation": {"wl_max_iterations": 2, "wl_score_proportions": {3: 1}}}
    )
    assert "keys must be WL scores in 1..wl_max_iterations (2)" in message


def test_cross_field_checks():
    assert "max_nodes (8) must be >=" in _problem({"data_generation": {"max_nodes": 8}})
    assert "train.seed and test.seed must differ" in _problem(
        {"data_generation": {"test": {"num_pairs": 5, "seed": 1}}}
    )
    assert "values must be distinct" in _problem(
        {"data_generation": {"graph_sizes": [7, 7]}}
    )


def test_several_problems_are_reported_together():
    message = _problem({"seed": -1, "device": "tpu"})
    assert message.startswith("2 invalid parameters:")
    assert len(message.splitlines()) == 3


def test_parameter_error_is_a_value_error_for_python_users():
    with pytest.raises(ValueError):
        parse_parameters(DataGenerationParams, {"pool_size": 1})


@pytest.mark.parametrize(
    "env", ["base", "test", "gi_ppo", "gi_ppo_reference", "gi_solo_agent"]
)
def test_every_environment_validates(env):
    params = parse_parameters(ProjectParameters, load_parameters(env))
    assert params.data_generation.train.seed != params.data_generation.test.seed
    if env.startswith("gi_"):
        assert params.data_generation.train.num_pairs == 10_000
        assert params.data_generation.test.num_pairs == 1_000
    if env == "test":  # soft merge: keys the env does not set come from base
        assert params.data_generation.wl_max_iterations == 5
        assert params.data_generation.graph_sizes == [7, 8]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"protocol": {"name": "chess"}},
            "protocol.name = 'chess': unknown protocol; valid protocols are pvg, nip, adp",
        ),
        (
            {"protocol": {"min_message_rounds": 8}},
            "the verifier never gets a turn at or after round 7",
        ),
        (
            {"agents": {"verifier": {"d_transformer": 10}}},
            "d_transformer (10) must be divisible by num_heads (4)",
        ),
        ({"agents": {"prover": {"type": "oracle"}}}, "agents.prover.type = 'oracle'"),
        (
            {"trainer": {"name": "dqn"}},
            "trainer.name = 'dqn': Input should be 'ppo' or 'solo_agent'",
        ),
        ({"trainer": {"ppo": {"gamma": 1.5}}}, "trainer.ppo.gamma = 1.5"),
        ({"trainer": {"ppo": {"lr": 0.1}}}, "trainer.ppo: unknown key(s) 'lr'"),
        ({"tracking": {"mode": "cloud"}}, "tracking.mode = 'cloud'"),
        (
            {"trainer": {"ppo": {"value_loss": "huber"}}},
            "trainer.ppo.value_loss = 'huber': Input should be 'mse' or 'smooth_l1'",
        ),
        (
            {"trainer": {"ppo": {"shared_optimizer": "sometimes"}}},
            "trainer.ppo.shared_optimizer = 'sometimes'",
        ),
        (
            {"agents": {"prover": {"node_selector_layers": 0}}},
            "agents.prover.node_selector_layers = 0: Input should be greater than or "
            "equal to 1",
        ),
        (
            {"agents": {"verifier": {"round_in_heads": "maybe"}}},
            "agents.verifier.round_in_heads = 'maybe'",
        ),
        (
            {"agents": {"verifier": {"most_recent_message_flag": 2}}},
            "agents.verifier.most_recent_message_flag = 2",
        ),
        (
            {"rewards": {"verifier_correct": "high"}},
            "rewards.verifier_correct = 'high'",
        ),
    ],
)
def test_game_and_trainer_blocks_are_validated(values, expected):
    assert expected in _problem(values)


def test_shared_body_needs_identical_architectures():
    message = _problem({"agents": {"shared_body": True}})
    assert (
        "shared_body: true needs identical prover and verifier architectures" in message
    )


def test_the_reference_environment_sets_the_reference_settings():
    default = parse_parameters(ProjectParameters, load_parameters("gi_ppo"))
    params = parse_parameters(ProjectParameters, load_parameters("gi_ppo_reference"))
    reference = {
        "activation": "tanh",
        "node_selector_layers": 2,
        "round_in_heads": True,
        "most_recent_message_flag": True,
        "observation_normalisation": True,
    }
    for agent in (params.agents.prover, params.agents.verifier):
        assert agent.model_dump(include=set(reference)) == reference
    ppo = params.trainer.ppo
    assert (ppo.value_loss, ppo.value_coefficient, ppo.shared_optimizer) == (
        "smooth_l1",
        1.0,
        True,
    )
    # Defaults keep today's behaviour; otherwise the two environments agree.
    assert default.agents.prover.model_dump(include=set(reference)) == {
        "activation": "relu",
        "node_selector_layers": 1,
        "round_in_heads": False,
        "most_recent_message_flag": False,
        "observation_normalisation": False,
    }
    assert (default.trainer.ppo.value_loss, default.trainer.ppo.shared_optimizer) == (
        "mse",
        False,
    )
    assert params.protocol == default.protocol and params.rewards == default.rewards
    same = {"iterations", "num_envs", "epochs", "minibatch_size"}
    assert ppo.model_dump(include=same) == default.trainer.ppo.model_dump(include=same)
    # gi_ppo learns faster with 1e-3 than with the reference's 3e-4.
    assert (default.trainer.ppo.learning_rate, ppo.learning_rate) == (1e-3, 3e-4)
    assert params.data_generation == default.data_generation
