"""One agent's PPO gradient step on fixed-shape minibatches, capturable on CUDA.

The plain update (:func:`pvg_pipeline.pvg.trainers.ppo.plain_update_agent`) indexes
the agent's samples, builds minibatches of varying size and reads its losses back
after every step. That is simple but host-bound: on a GPU each gradient step is
~650 small kernels launched one by one, and on a CPU the optimiser walks ~60 small
parameter tensors. :class:`AgentUpdater` computes the same thing with

- every parameter (and gradient) a view of one flat tensor, so Adam and gradient
  clipping are a handful of operations on one buffer (Adam is elementwise: the
  same arithmetic as per-parameter Adam);
- static input buffers of the whole collection and a fixed minibatch of
  ``minibatch_size`` rows given by an index and a 0/1 weight (the last, shorter
  minibatch of an epoch is padded with weight-0 copies of a real sample), its
  per-row data packed for the whole iteration beforehand
  (:mod:`~pvg_pipeline.pvg.trainers.fast.padded_minibatches`);
- on the padded path, the loss's gradient in closed form
  (:func:`~pvg_pipeline.pvg.trainers.ppo_loss.explicit_gradient_ppo_loss`) and the
  gradients copied into the flat buffer at once (``PVG_LEAN_STEP=0``: autograd's
  backward and accumulation);
- loss sums accumulated on the device and read once per iteration;
- on CUDA, the whole step (forward, backward, clipping, Adam) captured once as a
  CUDA graph and replayed for every minibatch.

The two paths agree to float rounding (tested).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, Int64
from tensordict import TensorDict
from torch import Tensor, nn

from pvg_pipeline.pvg.scenarios.graph_isomorphism.game import OBSERVATION_KEYS
from pvg_pipeline.pvg.trainers.fast import padded_minibatches
from pvg_pipeline.pvg.trainers.fast.captured import capture_graph
from pvg_pipeline.pvg.trainers.fast.flat_parameters import FlatParameters
from pvg_pipeline.pvg.trainers.fast.padded_minibatches import (
    FLOAT_KEYS,
    INTEGER_KEYS,
    NETWORK_KEYS,
)
from pvg_pipeline.pvg.trainers.ppo_loss import (
    LOSS_NAMES,
    EagerLoss,
    LossWeights,
    explicit_gradient_ppo_loss,
    lean_step,
    loss_constants,
    ppo_loss,
)

# One fused Adam update on the CPU (an ATen operation since torch 2.4).
_HAS_FUSED_ADAM = hasattr(torch, "_fused_adam_")

_INPUT_KEYS = tuple(k for k in OBSERVATION_KEYS if k != "active")


class AgentUpdater:
    """PPO minibatch steps for one agent over a collection of ``capacity`` frames.

    Parameters
    ----------
    agent
        The network to train; its parameters are flattened (see
        :class:`FlatParameters`) until :meth:`release`.
    index
        The agent's column in the collection's per-agent keys.
    capacity
        Frames per collection (``num_envs * steps_per_iteration``).
    minibatch_size, learning_rate, weights
        PPO settings.
    cuda_graph
        Capture the step as a CUDA graph (CUDA devices only; ignored on CPU).
    compile_loss
        ``torch.compile`` the loss (forward and backward) before capturing; pays
        off on a GPU only (fixed shapes, no recompilation).
    eager_loss
        An accelerator's loss for the eager path (see :data:`EagerLoss`).
    """

    def __init__(
        self,
        agent: nn.Module,
        index: int,
        capacity: int,
        minibatch_size: int,
        learning_rate: float,
        weights: LossWeights,
        cuda_graph: bool = True,
        compile_loss: bool = False,
        eager_loss: EagerLoss | None = None,
    ) -> None:
        self.agent = agent
        self.eager_loss = eager_loss
        self.index = index
        self.weights = weights
        self.flat = FlatParameters(agent)
        device, dtype = self.flat.parameter.device, self.flat.parameter.dtype
        self.graphed = cuda_graph and device.type == "cuda"
        # Padded minibatches of one shape: needed by the graph, testable on CPU.
        self.fixed_shape = self.graphed
        self.optimizer = torch.optim.Adam(
            [self.flat.parameter],
            lr=learning_rate,
            capturable=self.graphed,
            fused=device.type == "cuda" or None,
        )
        self.capacity = capacity
        self.minibatch_size = minibatch_size
        self._frames: dict[str, Tensor] | None = None
        # The padded step's minibatch (see padded_minibatches), copied in per step.
        self._floats = torch.zeros(
            len(FLOAT_KEYS), minibatch_size, dtype=dtype, device=device
        )
        self._integers = torch.zeros(
            len(INTEGER_KEYS), minibatch_size, dtype=torch.int64, device=device
        )
        self.totals = torch.zeros(len(LOSS_NAMES), dtype=dtype, device=device)
        self._loss_constants = loss_constants(weights, device).to(dtype)
        self._parameters = list(agent.parameters())  # in the flat buffer's order
        self.compile_loss = compile_loss
        self._loss: Callable[..., tuple[Tensor, Tensor]] | None = None
        # One graph per formulation (see lean_step), so a benchmark can alternate.
        self._graphs: dict[bool, torch.cuda.CUDAGraph] = {}
        # The agent's own stream: its graph is captured and replayed there, so
        # two agents' steps can run at the same time. Capturing on distinct
        # streams also gives each graph its own cuBLAS workspace (PyTorch keys
        # it by stream), which concurrent replays must not share.
        self.stream = torch.cuda.Stream(device) if self.graphed else None
        self._fused_cpu_adam = device.type == "cpu" and _HAS_FUSED_ADAM

    # -- per iteration ------------------------------------------------------------

    def load(
        self,
        data: TensorDict,
        advantage: Float[Tensor, "frame"],
        target: Float[Tensor, "frame"],
    ) -> None:
        """Copy one collection (flattened to ``capacity`` frames) into the static
        buffers the step reads."""
        if data.batch_size[0] != self.capacity:
            raise ValueError(
                f"collection has {data.batch_size[0]} frames, expected {self.capacity}"
            )
        frames = {
            **{key: data[key] for key in _INPUT_KEYS},
            "node": data["node"][:, self.index],
            "decision": data["decision"],
            "old_log_prob": data["log_prob"][:, self.index],
            "advantage": advantage,
            "target": target,
        }
        if self._frames is None:
            self._frames = {k: v.clone() for k, v in frames.items()}
        else:
            for key, value in frames.items():
                self._frames[key].copy_(value)

    def run(self, minibatch_rows: Int64[Tensor, "step row"], sizes: list[int]) -> int:
        """One gradient step per row of ``minibatch_rows``; ``sizes[i]`` of its
        leading entries are real samples (the rest repeat one with weight 0).

        Eagerly (CPU) a step uses only its real samples; a CUDA graph needs the
        fixed shape, so there the padding rows are computed and weighted 0.
        """
        device = self._floats.device
        rows = minibatch_rows.to(device)
        if not self.fixed_shape:
            for step, size in enumerate(sizes):
                self._step(rows[step, :size], None)
            return len(sizes)
        weights = (
            torch.arange(self.minibatch_size)[None, :]
            < torch.tensor(sizes, dtype=torch.int64)[:, None]
        ).to(device, self._floats.dtype)
        floats, integers = self._pack(rows, weights)
        lean = lean_step()
        for step in range(len(sizes)):
            self._set_minibatch(floats[step], integers[step])
            if lean not in self._graphs and self.graphed:
                self._capture(lean)
            graph = self._graphs.get(lean)
            if graph is None:
                self._padded_step(lean)
            else:
                graph.replay()  # capturing records only: replay runs the step
        return len(sizes)

    def release(self) -> None:
        """Leave the agent with ordinary parameters (after training)."""
        self.flat.release()

    # -- the step -----------------------------------------------------------------

    def _step(
        self, rows: Int64[Tensor, "row"], weight: Float[Tensor, "row"] | None
    ) -> None:
        """One gradient step on ``rows``: eagerly on real rows (``weight`` None),
        or as the padded step with its minibatch copied into the static buffers."""
        if weight is None:
            self._optimise(*self._losses(self._frames, rows), copy_gradients=False)
            return
        floats, integers = self._pack(rows[None], weight[None])
        self._set_minibatch(floats[0], integers[0])
        self._padded_step(lean_step())

    def _set_minibatch(self, floats: Tensor, integers: Tensor) -> None:
        """Copy one packed minibatch into the static buffers the padded step reads."""
        self._floats.copy_(floats)
        self._integers.copy_(integers)

    def _pack(self, rows: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        assert self._frames is not None, "load() a collection first"
        normalize = self.weights.normalize_advantage
        return padded_minibatches.pack(self._frames, rows, weights, normalize)

    def _padded_step(self, lean: bool) -> None:
        """The step a CUDA graph captures: the minibatch in the static buffers;
        ``lean``: the fewer-kernel formulation (:func:`lean_step`)."""
        if self._loss is None:
            # Fused forward/backward kernels mean fewer launches inside the graph;
            # compiling needs the fixed shapes (no recompilation per minibatch).
            padded = self._padded_losses
            self._loss = torch.compile(padded) if self.compile_loss else padded
        loss, losses = self._loss(self._frames, self._floats, self._integers, lean)
        self._optimise(loss, losses, copy_gradients=lean)

    def _optimise(self, loss: Tensor, losses: Tensor, copy_gradients: bool) -> None:
        """Gradients of ``loss``, clipping and Adam; ``losses`` summed on the device."""
        grad = self.flat.parameter.grad
        if copy_gradients:
            # One copy into the flat buffer instead of zeroing it and one
            # accumulating addition per parameter (~50 kernels in a graph).
            grads = torch.autograd.grad(loss, self._parameters)
            torch.cat([g.reshape(-1) for g in grads], out=grad)
        else:
            grad.zero_()
            loss.backward()
        # clip_grad_norm_ without a host sync: one norm over the flat gradient.
        scale = (self.weights.max_grad_norm / (grad.norm() + 1e-6)).clamp(max=1.0)
        grad.mul_(scale)
        if self._fused_cpu_adam:
            self._adam_step()
        else:  # on CUDA the optimiser is fused already (and capturable)
            self.optimizer.step()
        with torch.no_grad():
            self.totals += losses.detach()

    def _adam_step(self) -> None:
        """``self.optimizer.step()`` as one fused operation on the flat buffer.

        On the CPU ``Adam.step`` is ~15 small operations behind ~100 us of Python;
        right after a backward pass, with cold caches, that is ~0.4 ms of a 15 ms
        step, against ~0.06 ms here. Same state (a checkpoint of the optimiser
        does not change) and the same formula, to float rounding.
        """
        parameter = self.flat.parameter
        state = self.optimizer.state[parameter]
        if not state:  # as Adam initialises it
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(parameter)
            state["exp_avg_sq"] = torch.zeros_like(parameter)
        group = self.optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        state["step"] += 1
        torch._fused_adam_(
            [parameter.data],
            [parameter.grad],
            [state["exp_avg"]],
            [state["exp_avg_sq"]],
            [],
            [state["step"]],
            amsgrad=False,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )

    def _losses(
        self, frames: dict[str, Tensor], rows: Int64[Tensor, "row"]
    ) -> tuple[Tensor, Float[Tensor, "4"]]:
        """The PPO loss of the minibatch ``rows`` (every row real) and the four
        reported losses (:data:`LOSS_NAMES`): the accelerator's ``eager_loss``
        where it applies, else :func:`ppo_loss`."""
        mb = {k: v.index_select(0, rows) for k, v in frames.items()}
        output = self.agent(*(mb[key] for key in NETWORK_KEYS))
        if self.eager_loss is not None:
            losses = self.eager_loss(output, mb, self.weights)
            if losses is not None:
                return losses
        return ppo_loss(output, mb, self.weights, None)

    def _padded_losses(
        self,
        frames: dict[str, Tensor],
        floats: Float[Tensor, "4 row"],
        integers: Int64[Tensor, "4 row"],
        lean: bool,
    ) -> tuple[Tensor, Float[Tensor, "4"]]:
        """The losses of the packed padded minibatch: ``lean``, with the
        hand-written backward (:func:`explicit_gradient_ppo_loss`), else
        :func:`ppo_loss`; same values."""
        inputs, mb, weight = padded_minibatches.unpack(frames, floats, integers)
        output = self.agent(*inputs)
        if lean:
            return explicit_gradient_ppo_loss(
                output, mb, self.weights, weight, self._loss_constants
            )
        return ppo_loss(output, mb, self.weights, weight)

    def _capture(self, lean: bool) -> None:
        """Warm up on a side stream, undo the warm-up's effects, capture one step.

        If capturing fails (an operation a graph cannot hold), warn and go on
        eagerly: slower, same results.
        """
        saved = self._snapshot()
        captured = capture_graph(
            lambda: self._padded_step(lean),
            "the PPO step",
            stream=self.stream,
            after_warm_up=lambda: self._restore(saved),
        )
        if captured is None:
            self._restore(saved)
            self.graphed = False
        else:
            self._graphs[lean] = captured[0]

    def _snapshot(self) -> list[tuple[Tensor, Tensor]]:
        tensors = [self.flat.parameter.data, self.totals]
        for state in self.optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, Tensor)]
        return [(t, t.clone()) for t in tensors]

    def _restore(self, saved: list[tuple[Tensor, Tensor]]) -> None:
        for target, value in saved:
            target.copy_(value)
        # Adam created its state during the warm-up: reset what did not exist.
        for state in self.optimizer.state.values():
            for value in state.values():
                if isinstance(value, Tensor) and not any(value is t for t, _ in saved):
                    value.zero_()

    def mean_losses(self, steps: int) -> dict[str, float]:
        """Mean of each loss over ``steps`` (one host read) and reset the sums."""
        values = (self.totals / max(steps, 1)).tolist()
        self.totals.zero_()
        return dict(zip(LOSS_NAMES, values, strict=True))
