"""The PPO loss of one minibatch: its one definition, :func:`ppo_loss`.

The clipped surrogate, the value loss (squared error, or the reference
implementation's smooth L1) and the entropy bonus of one agent's minibatch, with
per-minibatch advantage normalisation. Every update path computes this loss: the
plain update (``ppo._update_agent``), the shared optimiser's joint steps and the
fixed-shape step call :func:`ppo_loss`; the captured step's
:func:`explicit_gradient_ppo_loss` is the same loss with its gradient written out
(fewer GPU kernels; tested against autograd of :func:`ppo_loss`), and an
accelerator may supply an :data:`EagerLoss` that computes the same faster (the CPU
accelerator's fused kernel, :mod:`pvg_pipeline.accelerate.cpu.loss`, tested
against :func:`ppo_loss`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from torch.nn import functional

from pvg_pipeline.pvg import overrides
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import AgentOutput
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import (
    action_log_prob,
    restrict_decisions,
)

#: An eager minibatch loss that an accelerator supplies: given the agent's
#: output, the minibatch (:data:`LOSS_KEYS`) and the weights, the loss and the
#: four reported losses as :func:`ppo_loss` computes them, or ``None`` where it
#: does not apply.
EagerLoss = Callable[
    [AgentOutput, "dict[str, Tensor]", "LossWeights"],
    "tuple[Tensor, Tensor] | None",
]

#: The network's inputs in a minibatch.
NETWORK_KEYS = ("adjacency", "node_mask", "message_history", "round")

#: The four reported losses, in the order :func:`ppo_loss` returns them.
LOSS_NAMES = ("policy_loss", "value_loss", "entropy", "decision_entropy")
#: The minibatch's keys the loss reads besides the agent's output.
LOSS_KEYS = (
    "node",
    "decision",
    "decision_allowed",
    "old_log_prob",
    "advantage",
    "target",
)

#: Value losses of a row with error ``e = value - target``: ``mse`` is ``e^2``;
#: ``smooth_l1`` is torch's ``smooth_l1_loss`` with ``beta = 1`` (``e^2 / 2`` for
#: ``|e| < 1``, else ``|e| - 1/2``), the reference implementation's.
VALUE_LOSSES = ("mse", "smooth_l1")


@dataclass(frozen=True)
class LossWeights:
    """The PPO settings one gradient step needs (``value_loss``: one of
    :data:`VALUE_LOSSES`)."""

    clip_epsilon: float
    entropy_coefficient: float
    value_coefficient: float
    max_grad_norm: float
    normalize_advantage: bool
    value_loss: str = "mse"

    def __post_init__(self) -> None:
        if self.value_loss not in VALUE_LOSSES:
            raise ValueError(
                f"value_loss {self.value_loss!r}: expected one of "
                f"{', '.join(VALUE_LOSSES)}"
            )


def value_loss_per_row(
    value: Float[Tensor, "row"], target: Float[Tensor, "row"], kind: str
) -> Float[Tensor, "row"]:
    """Each row's value loss (:data:`VALUE_LOSSES`), in PyTorch operations."""
    if kind == "smooth_l1":
        return functional.smooth_l1_loss(value, target, reduction="none", beta=1.0)
    return (value - target).pow(2)


def masked_mean(values: Tensor, valid: Bool[Tensor, "row"], count: Tensor) -> Tensor:
    """Mean of ``values`` over the ``valid`` rows (``where``, not a product, so
    that a non-finite value in a padding row cannot leak into the result)."""
    return torch.where(valid, values, 0.0).sum() / count


def ppo_loss(
    output: AgentOutput,
    minibatch: dict[str, Tensor],
    settings: LossWeights,
    weight: Float[Tensor, "row"] | None,
) -> tuple[Tensor, Float[Tensor, "4"]]:
    """The PPO loss of a minibatch (PyTorch operations) and its four reported
    means (:data:`LOSS_NAMES`).

    ``minibatch`` holds the minibatch's ``node``, ``decision``, ``decision_allowed``,
    ``old_log_prob``, ``advantage`` and ``target``. ``weight`` ``None``: every row
    is real (the plain path's formulas, advantages normalised here when
    ``settings`` says so); otherwise 0 marks padding rows and the advantages are
    used as given (a padded step gets them normalised per minibatch beforehand,
    by :func:`~pvg_pipeline.pvg.trainers.fast.padded_minibatches.normalised_advantages`).
    """
    log_prob, entropy, decision_entropy = action_log_prob(
        output, minibatch["node"], minibatch["decision"], minibatch["decision_allowed"]
    )
    advantage = minibatch["advantage"]
    if weight is None:
        mean: Callable[[Tensor], Tensor] = Tensor.mean
        if settings.normalize_advantage and len(advantage) > 1:
            advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
    else:
        valid, count = weight > 0, weight.sum()

        def mean(values: Tensor) -> Tensor:
            return masked_mean(values, valid, count)

    ratio = (log_prob - minibatch["old_log_prob"]).exp()
    clipped = ratio.clamp(1 - settings.clip_epsilon, 1 + settings.clip_epsilon)
    surrogate = torch.minimum(ratio * advantage, clipped * advantage)
    policy_loss = -mean(surrogate)
    value_loss = mean(
        value_loss_per_row(output.value, minibatch["target"], settings.value_loss)
    )
    entropy_mean = mean(entropy)
    loss = (
        policy_loss
        + settings.value_coefficient * value_loss
        - settings.entropy_coefficient * entropy_mean
    )
    reported = torch.stack(
        [
            policy_loss,
            value_loss,
            entropy_mean,
            mean(decision_entropy),
        ]
    )
    return loss, reported


#: ``PVG_LEAN_STEP=0`` turns off the captured step's fewer-kernel formulation
#: (:func:`explicit_gradient_ppo_loss` and gradients written straight into the
#: flat buffer, see ``update_step``), for measuring it.
LEAN_STEP_SWITCH = "PVG_LEAN_STEP"


def lean_step() -> bool:
    """Whether the padded (captured) step uses its fewer-kernel formulation."""
    return overrides.enabled(LEAN_STEP_SWITCH)


def loss_constants(settings: LossWeights, device: torch.device) -> Float[Tensor, "2 4"]:
    """Row 0: the signs that turn the four per-row means into the reported losses;
    row 1: the loss as a combination of those means. Made once, outside a CUDA
    graph (a host-to-device copy cannot be captured)."""
    return torch.tensor(
        [
            [-1.0, 1.0, 1.0, 1.0],
            [-1.0, settings.value_coefficient, -settings.entropy_coefficient, 0.0],
        ],
        device=device,
    )


def _log_softmax_parts(
    logits: Float[Tensor, "row n"],
) -> tuple[Tensor, Tensor, Float[Tensor, "row"]]:
    """Log-probabilities (impossible actions at the lowest float instead of
    ``-inf``: ``0 * log p`` stays 0 in the entropy and its gradient),
    probabilities and entropy of ``softmax(logits)``."""
    log_p = logits.log_softmax(-1)
    p = log_p.exp()
    log_p = log_p.clamp_min(torch.finfo(log_p.dtype).min)
    return log_p, p, -(p * log_p).sum(-1)


def _logits_gradient(
    log_p: Tensor,
    p: Tensor,
    entropy: Float[Tensor, "row"],
    chosen: Tensor,
    minus_d_log_prob: Float[Tensor, "row"],
    minus_d_entropy: Float[Tensor, "row"],
) -> Float[Tensor, "row n"]:
    """Gradient of ``d_log_prob * log p[chosen] + d_entropy * entropy`` with
    respect to the logits: ``d log p_c / dz_k = [k = c] - p_k`` and
    ``d H / dz_k = -p_k (log p_k + H)``."""
    scale = torch.addcmul(
        minus_d_log_prob[:, None], log_p + entropy[:, None], minus_d_entropy[:, None]
    )
    grad = p * scale
    return grad.scatter_add_(1, chosen[:, None], -minus_d_log_prob[:, None])


class _ExplicitGradientLoss(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        node_logits: Tensor,
        decision_logits: Tensor | None,
        value: Tensor,
        minibatch: dict[str, Tensor],
        weight: Tensor,
        constants: Tensor,
        settings: LossWeights,
    ) -> tuple[Tensor, Tensor]:
        count = weight.sum()
        log_p, p, entropy = _log_softmax_parts(node_logits)
        node = minibatch["node"]
        log_prob = log_p.gather(1, node[:, None]).squeeze(1)
        decision_parts: tuple[Tensor, ...] = ()
        node_entropy = entropy
        if decision_logits is None:
            decision_entropy = torch.zeros_like(entropy)
        else:
            restricted = restrict_decisions(
                decision_logits, minibatch["decision_allowed"]
            )
            d_log_p, d_p, decision_entropy = _log_softmax_parts(restricted)
            decision = minibatch["decision"]
            log_prob = log_prob + d_log_p.gather(1, decision[:, None]).squeeze(1)
            entropy = entropy + decision_entropy
            decision_parts = (d_log_p, d_p, decision_entropy, decision)
        advantage = minibatch["advantage"]
        ratio = (log_prob - minibatch["old_log_prob"]).exp()
        clipped = ratio.clamp(1 - settings.clip_epsilon, 1 + settings.clip_epsilon)
        unclipped_term, clipped_term = ratio * advantage, clipped * advantage
        surrogate = torch.minimum(unclipped_term, clipped_term)
        # d surrogate / d log_prob, as autograd has it: inside the clipping range
        # the two terms are equal and the whole gradient passes; outside it,
        # torch.minimum gives it to the smaller term (half on a tie) and clamp
        # passes none through the clipped one.
        to_unclipped = ((clipped_term - unclipped_term).sign() + 1) * 0.5
        share = torch.where(ratio == clipped, 1.0, to_unclipped)
        d_surrogate = advantage * ratio * share
        error = value - minibatch["target"]
        if settings.value_loss == "smooth_l1":
            value_per_row = value_loss_per_row(value, minibatch["target"], "smooth_l1")
            # d smooth_l1 / d value: e inside |e| < 1, its sign outside.
            error = error.clamp(-1.0, 1.0)
        else:
            value_per_row = error * error
        per_row = torch.stack([surrogate, value_per_row, entropy, decision_entropy])
        means = torch.mv(per_row, weight) / count
        ctx.set_materialize_grads(False)  # no zeros for the reported losses
        ctx.settings = settings
        ctx.has_decision = decision_logits is not None
        ctx.save_for_backward(
            log_p, p, node_entropy, node, d_surrogate, error, weight, count,
            *decision_parts,
        )  # fmt: skip
        reported = means * constants[0]
        ctx.mark_non_differentiable(reported)
        return means.dot(constants[1]), reported

    @staticmethod
    def backward(  # type: ignore[override]
        ctx, grad_loss: Tensor, _grad_reported: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        log_p, p, entropy, node, d_surrogate, error, weight, count, *decision_parts = (
            ctx.saved_tensors
        )
        settings: LossWeights = ctx.settings
        row_weight = weight * (grad_loss / count)
        # loss = -mean(surrogate) + c_v mean(error^2) - c_e mean(entropy)
        minus_d_log_prob = row_weight * d_surrogate
        minus_d_entropy = row_weight * settings.entropy_coefficient
        grad_node = _logits_gradient(
            log_p, p, entropy, node, minus_d_log_prob, minus_d_entropy
        )
        grad_decision = None
        if ctx.has_decision:
            grad_decision = _logits_gradient(
                *decision_parts[:3],
                decision_parts[3],
                minus_d_log_prob,
                minus_d_entropy,
            )
        # d(row's value loss)/d value: 2 e for the squared error; the clamped
        # error (saved as ``error``) for smooth L1.
        slope = settings.value_coefficient * (2 if settings.value_loss == "mse" else 1)
        grad_value = error * (row_weight * slope)
        return grad_node, grad_decision, grad_value, None, None, None, None


def explicit_gradient_ppo_loss(
    output: AgentOutput,
    minibatch: dict[str, Tensor],
    settings: LossWeights,
    weight: Float[Tensor, "row"],
    constants: Float[Tensor, "2 4"],
) -> tuple[Tensor, Float[Tensor, "4"]]:
    """:func:`ppo_loss` of a padded minibatch (``weight`` 0 at padding rows, which
    repeat a real row; advantages as given) with a hand-written backward pass.

    Autograd's backward of :func:`ppo_loss` is ~70 small operations, and with the
    forward's ~60 about a third of the kernels of a captured gradient step on a GPU,
    where each costs a few microseconds however small. The loss ends the graph, so
    its gradient with respect to the three outputs has a closed form: ~30 kernels
    forward and ~16 backward. Same values and gradients, to float rounding
    (tested). ``constants``: :func:`loss_constants`.
    """
    return _ExplicitGradientLoss.apply(
        output.node_logits,
        output.decision_logits,
        output.value,
        minibatch,
        weight,
        constants,
        settings,
    )
