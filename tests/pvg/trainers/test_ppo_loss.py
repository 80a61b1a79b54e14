"""The explicit-gradient PPO loss of padded minibatches equals autograd's, and the
captured step's lean formulation issues far fewer operations."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from pvg_pipeline.pvg.operation_count import OperationCounter
from pvg_pipeline.pvg.trainers import ppo
from pvg_pipeline.pvg.trainers.ppo_loss import (
    LEAN_STEP_SWITCH,
    LOSS_KEYS,
    explicit_gradient_ppo_loss,
    loss_constants,
    ppo_loss,
)
from tests.pvg.trainers.collection import CONFIG, on_device
from tests.pvg.trainers.loss_cases import SETTINGS, fields, leaves, minibatch

CPU = torch.device("cpu")


def _loss_and_gradients(output, data, settings, weight, explicit):
    output = leaves(output)
    if explicit:
        constants = loss_constants(settings, CPU)
        loss, reported = explicit_gradient_ppo_loss(
            output, data, settings, weight, constants
        )
    else:
        loss, reported = ppo_loss(output, data, settings, weight)
    (3.0 * loss).backward()  # a gradient other than 1 reaches the backward pass
    return loss, reported, [None if t is None else t.grad for t in fields(output)]


def _padding(rows, real):
    return (torch.arange(rows) < real).float()


@pytest.mark.parametrize(
    "rows, real, verifier, normalize, spread",
    [
        (256, 256, True, True, 1.0),
        (256, 200, False, True, 1.0),
        (100, 37, True, False, 3.0),
        (7, 7, False, False, 0.1),
        (16, 1, True, True, 1.0),  # one real row: advantages not normalised
    ],
)
def test_matches_autograd_of_the_pytorch_loss(rows, real, verifier, normalize, spread):
    output, data = minibatch(rows, verifier, spread=spread)
    settings = replace(SETTINGS, normalize_advantage=normalize)
    weight = _padding(rows, real)
    loss, reported, grads = _loss_and_gradients(output, data, settings, weight, True)
    loss_ref, reported_ref, grads_ref = _loss_and_gradients(
        output, data, settings, weight, False
    )
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(reported, reported_ref.detach(), rtol=1e-5, atol=1e-6)
    for grad, reference, name in zip(
        grads, grads_ref, ("node", "decision", "value"), strict=True
    ):
        if reference is None:
            assert grad is None, name
            continue
        # (a single real row may have no decision to make)
        assert reference.abs().max() > 0 or (name, real) == ("decision", 1), name
        torch.testing.assert_close(grad, reference, rtol=1e-4, atol=1e-7, msg=name)
        assert not grad[real:].any(), f"{name}: padding rows get no gradient"
    assert not reported.requires_grad


def test_ties_and_the_clipping_bounds_split_the_gradient_as_autograd_does():
    """Ratios of exactly 1 and zero advantages (the two terms tie, inside and
    outside the clipping range), plus ratios far outside it on both sides."""
    output, data = minibatch(64, True, spread=4.0)
    with torch.no_grad():
        current = (
            output.node_logits.log_softmax(-1)
            .gather(1, data["node"][:, None])
            .squeeze(1)
        )
    data["old_log_prob"][:16] = current[:16]  # ratio 1 up to rounding
    data["advantage"][8:24] = 0.0
    settings = replace(SETTINGS, normalize_advantage=False)
    weight = torch.ones(64)
    _, _, grads = _loss_and_gradients(output, data, settings, weight, True)
    _, _, grads_ref = _loss_and_gradients(output, data, settings, weight, False)
    for grad, reference in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(grad, reference, rtol=1e-4, atol=1e-7)


def test_every_input_changes_the_result():
    """The comparisons above can fail: the loss reads every input."""
    output, data = minibatch(64, True)
    weight = _padding(64, 50)
    base, _, base_grads = _loss_and_gradients(output, data, SETTINGS, weight, True)
    changes = {key: data[key] for key in LOSS_KEYS} | {"weight": weight}
    for key, value in changes.items():
        if value.dtype == torch.bool:
            changed = ~value
        elif value.dtype == torch.int64:
            changed = (value + 1) % 3 if key == "decision" else torch.zeros_like(value)
        elif key == "weight":
            changed = _padding(64, 30)
        else:
            changed = value + torch.linspace(0.5, 1.5, len(value))
        new_data = data | {key: changed} if key != "weight" else data
        new_weight = changed if key == "weight" else weight
        loss, _, grads = _loss_and_gradients(
            output, new_data, SETTINGS, new_weight, True
        )
        assert not (
            torch.equal(loss, base) and torch.equal(grads[0], base_grads[0])
        ), key


@pytest.mark.parametrize("agent", ["prover", "verifier"])
def test_the_lean_step_has_a_third_fewer_operations_and_the_same_result(
    collection, monkeypatch, agent
):
    """What a CUDA graph captures, counted on the CPU: each operation of the
    padded step is one kernel launch in the graph."""
    agents, experience, advantages, returns = collection
    data = experience.data.reshape(-1)
    results = {}
    for lean in ("1", "0"):
        monkeypatch.setenv(LEAN_STEP_SWITCH, lean)
        copies = copy.deepcopy(agents)
        updater = ppo.make_updaters(copies, copies, CONFIG)[agent]
        updater.fixed_shape = True
        index = updater.index
        updater.load(
            data, advantages[..., index].reshape(-1), returns[..., index].reshape(-1)
        )
        rows = data["active"][:, index].nonzero().squeeze(1)[: CONFIG.minibatch_size]
        weight = _padding(CONFIG.minibatch_size, len(rows) - 3)
        with OperationCounter() as counter:
            updater._step(rows, weight)
        results[lean] = (
            counter,
            updater.flat.parameter.grad.clone(),  # the step's clipped gradient
            updater.totals.clone(),
        )
        updater.release()
    lean_ops, off_ops = results["1"][0].total, results["0"][0].total
    assert lean_ops < 0.8 * off_ops, (lean_ops, off_ops)
    # No accumulation into the gradient buffer: one copy of the gradients instead.
    assert results["1"][0].counts["add_"] < results["0"][0].counts["add_"] - 30
    assert results["0"][1].abs().max() > 0
    torch.testing.assert_close(results["1"][1], results["0"][1], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(results["1"][2], results["0"][2], rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_each_formulation_is_captured_once_with_the_same_gradient(
    collection, monkeypatch
):
    """On CUDA each formulation has its own graph (a benchmark alternates them
    in one process), and both graphs give the same gradient."""
    on_gpu = on_device(torch.device("cuda"), collection)
    one_step = replace(CONFIG, cuda_graphs=True, epochs=1, minibatch_size=10_000)
    gradients = {}
    for lean in ("1", "0"):
        monkeypatch.setenv(LEAN_STEP_SWITCH, lean)
        agents = {n: copy.deepcopy(a) for n, a in on_gpu[0].items()}
        updaters = ppo.make_updaters(agents, agents, one_step)
        ppo.update_agents_fixed_shape(
            updaters, *on_gpu[1:], one_step, torch.Generator().manual_seed(0)
        )
        gradients[lean] = {n: u.flat.parameter.grad.cpu() for n, u in updaters.items()}
        assert all(set(u._graphs) == {lean == "1"} for u in updaters.values())
        monkeypatch.setenv(LEAN_STEP_SWITCH, "0" if lean == "1" else "1")
        ppo.update_agents_fixed_shape(
            updaters, *on_gpu[1:], one_step, torch.Generator().manual_seed(0)
        )
        assert all(set(u._graphs) == {True, False} for u in updaters.values())
        for updater in updaters.values():
            updater.release()
    for name, gradient in gradients["1"].items():
        assert gradient.abs().max() > 0
        torch.testing.assert_close(gradient, gradients["0"][name], rtol=1e-4, atol=1e-7)
