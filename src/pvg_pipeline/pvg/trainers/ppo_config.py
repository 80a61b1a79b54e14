"""PPO hyperparameters of one training run."""

from __future__ import annotations

from dataclasses import dataclass

from pvg_pipeline.pvg.trainers.ppo_loss import LossWeights


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (defaults: the paper-scale values)."""

    iterations: int = 100
    num_envs: int = 256
    steps_per_iteration: int = 8
    epochs: int = 10
    minibatch_size: int = 256
    gamma: float = 0.95
    gae_lambda: float = 0.95
    clip_epsilon: float = 0.2
    entropy_coefficient: float = 1e-3
    value_coefficient: float = 0.5
    learning_rate: float = 3e-4
    max_grad_norm: float = 0.5
    normalize_advantage: bool = True
    checkpoint_interval: int = 10
    #: Every this many iterations (and at the last): test-split evaluation and
    #: update diagnostics in the history.
    eval_interval: int = 100
    cuda_graphs: bool = True
    compile: bool = False
    #: ``mse`` or ``smooth_l1`` (the reference's), see ``ppo_loss.VALUE_LOSSES``.
    value_loss: str = "mse"
    #: One Adam over every agent with joint steps (module ``shared_optimizer``).
    shared_optimizer: bool = False
    #: Rounds of random play (in ``num_envs`` environments) that fit the input
    #: statistics of agents with ``observation_normalisation``.
    observation_normalisation_steps: int = 1000

    def __post_init__(self) -> None:
        self.loss_weights()  # rejects an unknown value_loss here, not mid-training

    def loss_weights(self) -> LossWeights:
        """The settings a gradient step needs."""
        return LossWeights(
            self.clip_epsilon,
            self.entropy_coefficient,
            self.value_coefficient,
            self.max_grad_norm,
            self.normalize_advantage,
            self.value_loss,
        )
