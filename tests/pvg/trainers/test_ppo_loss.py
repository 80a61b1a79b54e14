"""The explicit-gradient PPO loss of padded minibatches equals autograd's, and the
captured step's lean formulation issues far fewer operations."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from pvg_pipeline.pvg.operation_count import OperationCounter
from pvg_pipeline.pvg.trainers import ppo
from pvg_pipeline.pvg.trainers.fast import padded_minibatches
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
    "rows, real, verifier, spread",
    [
        (256, 256, True, 1.0),
        (256, 200, False, 1.0),
        (100, 37, True, 3.0),
        (7, 7, False, 0.1),
        (16, 1, True, 1.0),
    ],
)
def test_matches_autograd_of_the_pytorch_loss(rows, real, verifier, spread):
    output, data = minibatch(rows, verifier, spread=spread)
    settings = SETTINGS  # (padded minibatches come with normalised advantages)
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
    settings = SETTINGS
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
        updater._step(rows, weight)  # loads the minibatch; creates lazy state
        with OperationCounter() as counter:
            updater._padded_step(lean == "1")
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


@pytest.mark.parametrize("normalize", [True, False])
def test_packed_minibatches_hold_the_plain_updates_normalised_advantages(normalize):
    """Each padded minibatch's advantages, normalised over its real rows at once
    for all minibatches, are the plain update's per-minibatch normalisation;
    a minibatch of one real row keeps its advantages."""
    generator = torch.Generator().manual_seed(0)
    frames = {
        "advantage": torch.randn(300, generator=generator) * 3 + 1,
        "old_log_prob": torch.randn(300, generator=generator),
        "target": torch.randn(300, generator=generator),
        "node": torch.randint(0, 20, (300,), generator=generator),
        "decision": torch.randint(0, 3, (300,), generator=generator),
        "decision_allowed": torch.rand(300, generator=generator) < 0.5,
        "adjacency": torch.rand(300, 2, 4, 4, generator=generator) < 0.5,
        "node_mask": torch.ones(300, 2, 4, dtype=torch.bool),
        "message_history": torch.randn(300, 3, generator=generator),
        "round": torch.arange(300),
    }
    sizes = [64, 17, 1]
    rows = torch.randint(0, 300, (3, 64), generator=generator)
    for step, size in enumerate(sizes):  # padding repeats a real row
        rows[step, size:] = rows[step, 0]
    weight = (torch.arange(64)[None, :] < torch.tensor(sizes)[:, None]).float()
    floats, integers = padded_minibatches.pack(frames, rows, weight, normalize)
    for step, size in enumerate(sizes):
        inputs, packed, packed_weight = padded_minibatches.unpack(
            frames, floats[step], integers[step]
        )
        real = rows[step, :size]
        advantage = frames["advantage"][real]
        if normalize and size > 1:
            advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        torch.testing.assert_close(packed["advantage"][:size], advantage)
        assert torch.equal(packed_weight, weight[step])
        for key in ("old_log_prob", "target", "node", "decision", "decision_allowed"):
            assert torch.equal(packed[key], frames[key][rows[step]]), key
        for key, value in zip(padded_minibatches.NETWORK_KEYS, inputs, strict=True):
            assert torch.equal(value, frames[key][rows[step]]), key
