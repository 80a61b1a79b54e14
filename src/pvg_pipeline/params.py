"""Typed, validated parameters built from Kedro's parameter dictionaries.

Every block of ``conf/*/parameters_*.yml`` has a pydantic model here. Validation
errors are turned into :class:`ParameterError`: one line per problem naming the
parameter path, the bad value and what is expected. The Kedro hook validates the
whole tree before any node runs; nodes parse their own block again (cheap) so the
domain code always receives typed values.
"""

from __future__ import annotations

import math
import re
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Literal,
)

from pydantic import Field, field_validator, model_validator

from pvg_pipeline.parameter_checks import (
    ParameterBlock,
    ParameterError,
    merge_parameters,
    parse_parameters,
)
from pvg_pipeline.pvg.protocol_names import (
    MULTI_ROUND,
    PROTOCOL_NAMES,
    first_decision_round,
    verifier_can_decide,
)

__all__ = [
    "ParameterBlock",
    "ParameterError",
    "ProjectParameters",
    "merge_parameters",
    "parse_parameters",
]

if TYPE_CHECKING:  # the domain imports torch: only load it when building objects
    from pvg_pipeline.pvg.graphs.generation import GenerationSpec
    from pvg_pipeline.pvg.protocols import Protocol, Rewards
    from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import AgentSpec

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]

#: Graphs are dense and padded; degree/colour keys and the agents assume this bound.
MAX_SUPPORTED_NODES = 15

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class SplitParams(ParameterBlock):
    """Size and seed of one dataset split."""

    num_pairs: Annotated[int, Field(ge=1, le=10_000_000)]
    seed: Seed


class DataGenerationParams(ParameterBlock):
    """The ``data_generation`` block."""

    hash_size: Annotated[int, Field(ge=1_024, le=2**24)] = 2**24 - 1
    graph_sizes: Annotated[
        list[Annotated[int, Field(ge=2, le=MAX_SUPPORTED_NODES)]], Field(min_length=1)
    ] = [7, 8, 9, 10, 11]
    edge_probabilities: Annotated[list[Probability], Field(min_length=1)] = [
        0.2,
        0.4,
        0.6,
        0.8,
    ]
    max_nodes: Annotated[int, Field(ge=2, le=MAX_SUPPORTED_NODES)] | None = None
    wl_max_iterations: Annotated[int, Field(ge=1, le=20)] = 5
    non_isomorphic_fraction: Probability = 0.5
    wl_score_proportions: dict[int, Annotated[float, Field(ge=0.0)]] = {
        1: 0.1,
        2: 0.2,
        3: 0.7,
    }
    isomorphic_copied_fraction: Probability = 0.5
    pool_size: Annotated[int, Field(ge=100, le=5_000_000)] = 100_000
    max_pool_draws: Annotated[int, Field(ge=1, le=100_000)] = 50
    train: SplitParams = SplitParams(num_pairs=2_000, seed=1)
    test: SplitParams = SplitParams(num_pairs=500, seed=2)

    @field_validator("graph_sizes", "edge_probabilities")
    @classmethod
    def _distinct(cls, values: list[Any]) -> list[Any]:
        if len(set(values)) != len(values):
            raise ValueError(f"values must be distinct, got {values}")
        return values

    @model_validator(mode="after")
    def _consistent(self) -> DataGenerationParams:
        problems = []
        if self.max_nodes is not None and self.max_nodes < max(self.graph_sizes):
            problems.append(
                f"max_nodes ({self.max_nodes}) must be >= the largest graph size "
                f"({max(self.graph_sizes)})"
            )
        bad_scores = [s for s in self.wl_score_proportions if not 1 <= s]
        bad_scores += [
            s for s in self.wl_score_proportions if s > self.wl_max_iterations
        ]
        if not self.wl_score_proportions or bad_scores:
            problems.append(
                "wl_score_proportions keys must be WL scores in 1..wl_max_iterations "
                f"({self.wl_max_iterations}), got {sorted(self.wl_score_proportions)}"
            )
        total = sum(self.wl_score_proportions.values())
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            problems.append(f"wl_score_proportions must sum to 1, got {total:g}")
        if self.train.seed == self.test.seed:
            problems.append(
                f"train.seed and test.seed must differ (both {self.train.seed}): the "
                "test split would repeat the training pairs"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def padded_nodes(self) -> int:
        """Size of the padded adjacency matrices."""
        return self.max_nodes or max(self.graph_sizes)

    def generation_spec(self, split: SplitParams) -> GenerationSpec:
        """The domain-level description of one split to generate."""
        from pvg_pipeline.pvg.graphs.generation import GenerationSpec

        return GenerationSpec(
            num_pairs=split.num_pairs,
            seed=split.seed,
            graph_sizes=self.graph_sizes,
            edge_probabilities=self.edge_probabilities,
            max_nodes=self.padded_nodes,
            wl_max_iterations=self.wl_max_iterations,
            non_isomorphic_fraction=self.non_isomorphic_fraction,
            wl_score_proportions=self.wl_score_proportions,
            isomorphic_copied_fraction=self.isomorphic_copied_fraction,
            pool_size=self.pool_size,
            max_pool_draws=self.max_pool_draws,
        )


class ProtocolParams(ParameterBlock):
    """The ``protocol`` block."""

    name: str = "pvg"
    verifier_first: bool = True
    min_message_rounds: Annotated[int, Field(ge=0, le=64)] = 0
    max_message_rounds: Annotated[int, Field(ge=1, le=64)] = 8
    # First counting decision: round min_message_rounds - 1 (the reference
    # implementation's rule) or round min_message_rounds.
    decisions_from: Literal["min_rounds_minus_one", "min_rounds"] = (
        "min_rounds_minus_one"
    )

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in PROTOCOL_NAMES:
            raise ValueError(
                f"unknown protocol; valid protocols are {', '.join(PROTOCOL_NAMES)}"
            )
        return value

    @model_validator(mode="after")
    def _rounds(self) -> ProtocolParams:
        if self.name in MULTI_ROUND and not verifier_can_decide(
            self.max_message_rounds,
            self.min_message_rounds,
            self.verifier_first,
            self.decisions_from,
        ):
            first = first_decision_round(self.min_message_rounds, self.decisions_from)
            raise ValueError(
                f"protocol {self.name}: the verifier never gets a turn at or after "
                f"round {first} within {self.max_message_rounds} "
                "rounds, so it could never decide"
            )
        return self

    def build(self) -> Protocol:
        """The protocol object these parameters describe."""
        from pvg_pipeline.pvg.protocols import build_protocol

        return build_protocol(
            self.name,
            max_message_rounds=self.max_message_rounds,
            min_message_rounds=self.min_message_rounds,
            verifier_first=self.verifier_first,
            decisions_from=self.decisions_from,
        )


class RewardParams(ParameterBlock):
    """The ``rewards`` block: reward constants of the game."""

    verifier_correct: float = 1.0
    verifier_incorrect: float = -1.0
    verifier_timeout: float = -1.0
    verifier_continue: float = 0.0
    # Where the continue reward is paid: every verifier turn of an undecided
    # episode (the reference's rule) or only turns where a decision would count.
    verifier_continue_turns: Literal["every_turn", "decision_turns"] = "every_turn"
    prover_convinced: float = 1.0

    def build(self) -> Rewards:
        """As the domain's :class:`Rewards`."""
        from pvg_pipeline.pvg.protocols import Rewards

        return Rewards(**self.model_dump())


class AgentParams(ParameterBlock):
    """Architecture of one agent; ``type: random`` for baselines."""

    type: Literal["neural", "random"] = "neural"
    num_gnn_layers: Annotated[int, Field(ge=1, le=32)] = 2
    d_gnn: Annotated[int, Field(ge=1, le=4096)] = 16
    d_gin_mlp: Annotated[int, Field(ge=1, le=16384)] = 64
    num_transformer_layers: Annotated[int, Field(ge=0, le=32)] = 1
    num_heads: Annotated[int, Field(ge=1, le=64)] = 4
    d_transformer: Annotated[int, Field(ge=1, le=4096)] = 16
    d_transformer_mlp: Annotated[int, Field(ge=1, le=16384)] = 64
    activation: Literal["relu", "tanh"] = "relu"
    batch_norm: bool = True
    orthogonal_init: bool = True
    node_selector_layers: Annotated[int, Field(ge=1, le=8)] = 1
    round_in_heads: bool = False
    most_recent_message_flag: bool = False
    observation_normalisation: bool = False
    answer_in_other_graph: bool = False

    @model_validator(mode="after")
    def _heads_divide(self) -> AgentParams:
        if self.d_transformer % self.num_heads:
            raise ValueError(
                f"d_transformer ({self.d_transformer}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        return self

    def spec(self) -> AgentSpec:
        """As the domain's :class:`AgentSpec`."""
        from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import (
            AgentArchitecture,
        )
        from pvg_pipeline.pvg.scenarios.graph_isomorphism.build import AgentSpec

        architecture = AgentArchitecture(**self.model_dump(exclude={"type"}))
        return AgentSpec(kind=self.type, architecture=architecture)


class AgentsParams(ParameterBlock):
    """The ``agents`` block: one architecture for all provers, one for the verifier."""

    prover: AgentParams = AgentParams(num_gnn_layers=5)
    verifier: AgentParams = AgentParams(num_gnn_layers=2)
    shared_body: bool = False

    @model_validator(mode="after")
    def _shareable(self) -> AgentsParams:
        if self.shared_body and self.prover != self.verifier:
            raise ValueError(
                "shared_body: true needs identical prover and verifier architectures"
            )
        return self


class PPOParams(ParameterBlock):
    """PPO hyperparameters (``trainer.ppo``)."""

    iterations: Annotated[int, Field(ge=1)] = 100
    num_envs: Annotated[int, Field(ge=1)] = 256
    steps_per_iteration: Annotated[int, Field(ge=1)] = 8
    epochs: Annotated[int, Field(ge=1)] = 10
    minibatch_size: Annotated[int, Field(ge=1)] = 256
    gamma: Probability = 0.95
    gae_lambda: Probability = 0.95
    clip_epsilon: Annotated[float, Field(gt=0.0)] = 0.2
    entropy_coefficient: Annotated[float, Field(ge=0.0)] = 1e-3
    value_coefficient: Annotated[float, Field(ge=0.0)] = 0.5
    learning_rate: Annotated[float, Field(gt=0.0)] = 3e-4
    max_grad_norm: Annotated[float, Field(gt=0.0)] = 0.5
    normalize_advantage: bool = True
    cuda_graphs: bool = True
    compile: bool = False
    value_loss: Literal["mse", "smooth_l1"] = "mse"
    shared_optimizer: bool = False
    observation_normalisation_steps: Annotated[int, Field(ge=1)] = 1000


class SoloAgentParams(ParameterBlock):
    """Supervised baseline settings (``trainer.solo_agent``)."""

    epochs: Annotated[int, Field(ge=1)] = 100
    batch_size: Annotated[int, Field(ge=1)] = 256
    learning_rate: Annotated[float, Field(gt=0.0)] = 1e-3


class TrainerParams(ParameterBlock):
    """The ``trainer`` block: which trainer, its settings, checkpoints."""

    name: Literal["ppo", "solo_agent"] = "ppo"
    ppo: PPOParams = PPOParams()
    solo_agent: SoloAgentParams = SoloAgentParams()
    checkpoint_interval: Annotated[int, Field(ge=1)] = 10
    # Test-split evaluation and update diagnostics every this many PPO iterations.
    eval_interval: Annotated[int, Field(ge=1)] = 100
    checkpoint_dir: str = "data/06_models/checkpoints"
    resume: bool = False
    resume_run: str | None = None


class TrackingParams(ParameterBlock):
    """The ``tracking`` block: Weights & Biases (never ``online`` unless asked)."""

    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "pvg_pipeline"
    entity: str | None = None
    #: Seconds to wait for the W&B server when online before logging offline.
    init_timeout: Annotated[float, Field(gt=0)] = 30.0


class EvaluationParams(ParameterBlock):
    """The ``evaluation`` block."""

    deterministic: bool = True
    batch_size: Annotated[int, Field(ge=1)] = 1024
    num_transcripts: Annotated[int, Field(ge=0)] = 20
    seed: Seed = 0


class ExperimentParams(ParameterBlock):
    """The ``experiment`` block: set by ``kedro sweep`` to tag a trial's outputs."""

    sweep: str | None = None
    trial: str | None = None


class ProjectParameters(ParameterBlock):
    """All parameters of a run."""

    seed: Seed = 0
    device: str = "auto"
    #: The Kedro environment of the run (``conf/base/parameters.yml`` resolves it).
    environment: str = "base"
    scenario: Literal["graph_isomorphism"] = "graph_isomorphism"
    data_generation: DataGenerationParams = DataGenerationParams()
    protocol: ProtocolParams = ProtocolParams()
    rewards: RewardParams = RewardParams()
    agents: AgentsParams = AgentsParams()
    trainer: TrainerParams = TrainerParams()
    tracking: TrackingParams = TrackingParams()
    evaluation: EvaluationParams = EvaluationParams()
    experiment: ExperimentParams = ExperimentParams()

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError("expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return value
