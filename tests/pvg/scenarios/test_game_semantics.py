"""Exact step semantics of every protocol on hand-built batches.

Reward constants are distinct powers of two so each reward path is identifiable:
correct +1, prover convinced +2, incorrect -4, continue +8, timeout -16.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch.utils._python_dispatch import TorchDispatchMode

from pvg_pipeline.pvg.operation_count import OperationCounter
from pvg_pipeline.pvg.protocols import Decision, Rewards, build_protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.game import new_episodes, step

R = Rewards(
    verifier_correct=1.0,
    prover_convinced=2.0,
    verifier_incorrect=-4.0,
    verifier_continue=8.0,
    verifier_timeout=-16.0,
)
ACC, REJ, CONT = int(Decision.ACCEPT), int(Decision.REJECT), int(Decision.CONTINUE)
N = 4  # padded nodes; graphs have 3 real nodes


def _start(protocol, labels, prover_choice=None):
    batch = len(labels)
    adjacency = torch.zeros(batch, 2, N, N, dtype=torch.bool)
    adjacency[:, :, 0, 1] = adjacency[:, :, 1, 0] = True
    choice = torch.tensor(prover_choice or [0] * batch)
    tables = protocol.tensors("cpu")
    state = new_episodes(
        adjacency,
        torch.full((batch,), 3),
        torch.tensor(labels),
        torch.arange(batch),
        choice,
        protocol,
        tables,
    )
    return state, tables


def _play(protocol, tables, state, nodes, decisions):
    return step(
        state, torch.tensor(nodes), torch.tensor(decisions), protocol, tables, R
    )


def test_pvg_turns_min_rounds_decisions_and_timeout():
    protocol = build_protocol(
        "pvg",
        max_message_rounds=4,
        min_message_rounds=3,
        verifier_first=True,
    )
    state, tables = _start(protocol, [True, False, True, False])
    assert protocol.agents == ("prover", "verifier")
    # Round 0: verifier's turn, decisions do not count yet; going on is paid.
    assert state["active"].tolist() == [[False, True]] * 4
    assert not state["decision_allowed"].any()
    state, reward, done = _play(
        protocol, tables, state, [[0, 1]] * 4, [ACC, REJ, ACC, CONT]
    )
    assert not done.any()
    assert reward.tolist() == [[0, 8]] * 4
    assert state["round"].tolist() == [1] * 4
    assert state["message_history"][:, 0, 0].reshape(4, -1)[:, 1].tolist() == [1.0] * 4
    assert state["message_history"].sum().item() == 4  # only the verifier's message
    # Round 1: prover's turn; its message goes to round 1 (node 2 of graph B = 6).
    assert state["active"].tolist() == [[True, False]] * 4
    state, reward, done = _play(protocol, tables, state, [[6, 3]] * 4, [ACC] * 4)
    assert not done.any() and not reward.any()
    assert state["message_history"][:, 1, 0, 1, 2].tolist() == [1.0] * 4
    assert state["message_history"][:, 1].sum().item() == 4
    # Round 2: verifier decides: correct accept, wrong accept, wrong reject, continue.
    assert state["decision_allowed"].all()
    state, reward, done = _play(
        protocol, tables, state, [[0, 0]] * 4, [ACC, ACC, REJ, CONT]
    )
    assert reward.tolist() == [[2, 1], [2, -4], [0, -4], [0, 8]]
    assert done.tolist() == [True, True, True, False]
    assert state["decision"].tolist() == [ACC, ACC, REJ, -1]
    # Round 3 (last): prover's turn; the undecided episode times out.
    state, reward, done = _play(protocol, tables, state, [[1, 0]] * 4, [CONT] * 4)
    assert reward[3].tolist() == [0, -16]
    assert done[3] and state["round"][3] == 4
    assert not state["active"][3].any()


def test_pvg_prover_first():
    protocol = build_protocol(
        "pvg", max_message_rounds=3, min_message_rounds=0, verifier_first=False
    )
    state, _ = _start(protocol, [True])
    assert state["active"].tolist() == [[True, False]]
    assert not state["decision_allowed"].any()


def test_adp_prover_then_verifier_must_decide():
    protocol = build_protocol("adp")
    state, tables = _start(protocol, [True, False, True])
    assert state["active"].tolist() == [[True, False]] * 3
    state, reward, done = _play(protocol, tables, state, [[5, 0]] * 3, [ACC] * 3)
    assert not done.any() and not reward.any()
    state, reward, done = _play(protocol, tables, state, [[0, 0]] * 3, [ACC, REJ, CONT])
    # Correct accept; correct reject (prover unpaid); continue then timeout.
    assert reward.tolist() == [[2, 1], [0, 1], [0, -16]]
    assert done.all()


def test_solo_verifier_decides_in_one_round():
    protocol = build_protocol("solo_verifier")
    state, tables = _start(protocol, [True, False, False])
    assert state["decision_allowed"].all()
    _, reward, done = _play(protocol, tables, state, [[0]] * 3, [ACC, REJ, CONT])
    assert reward.tolist() == [[1], [1], [-16]]
    assert done.all()


def test_debate_both_provers_answer_and_see_everything():
    protocol = build_protocol(
        "debate", max_message_rounds=4, min_message_rounds=2, verifier_first=True
    )
    assert protocol.agents == ("prover_0", "prover_1", "verifier")
    state, tables = _start(protocol, [True, False])
    state, _, _ = _play(protocol, tables, state, [[0, 0, 2]] * 2, [CONT] * 2)
    # The verifier's question is written to both channels.
    assert state["message_history"][:, 0, :, 0, 2].tolist() == [[1, 1]] * 2
    assert state["active"].tolist() == [[True, True, False]] * 2
    state, _, _ = _play(protocol, tables, state, [[1, 5, 0]] * 2, [CONT] * 2)
    assert state["message_history"][:, 1, 0, 0, 1].tolist() == [1, 1]
    assert state["message_history"][:, 1, 1, 1, 1].tolist() == [1, 1]
    assert state["message_history"][:, 1].sum().item() == 4
    assert protocol.visibility == ((True, True),) * 3
    state, reward, done = _play(protocol, tables, state, [[0, 0, 0]] * 2, [ACC, ACC])
    # prover_1 argues accept (+2 on accept), prover_0 argues reject (unpaid here).
    assert reward.tolist() == [[0, 2, 1], [0, 2, -4]]
    assert done.all()


def test_mnip_private_channels_and_reject_pays_prover_0():
    protocol = build_protocol(
        "mnip", max_message_rounds=2, min_message_rounds=0, verifier_first=True
    )
    assert protocol.visibility == ((True, False), (False, True), (True, True))
    state, tables = _start(protocol, [False, True])
    _, reward, done = _play(protocol, tables, state, [[0, 0, 0]] * 2, [REJ, REJ])
    assert reward.tolist() == [[2, 0, 1], [2, 0, -4]]
    assert done.all()


def test_merlin_arthur_one_prover_per_episode():
    protocol = build_protocol("merlin_arthur")
    state, tables = _start(protocol, [True, True], prover_choice=[0, 1])
    assert state["active"].tolist() == [[True, False, False], [False, True, False]]
    state, _, _ = _play(protocol, tables, state, [[3, 7, 0]] * 2, [CONT] * 2)
    # One shared channel: the verifier cannot tell which prover spoke.
    assert state["message_history"][0, 0, 0].reshape(-1).nonzero().tolist() == [[3]]
    assert state["message_history"][1, 0, 0].reshape(-1).nonzero().tolist() == [[7]]
    assert state["active"].tolist() == [[False, False, True]] * 2
    _, reward, done = _play(protocol, tables, state, [[0, 0, 0]] * 2, [ACC, REJ])
    # Episode 0: prover_0 (reject side) took part; accept pays prover_1, who did
    # not take part, so nobody is paid. Episode 1: reject would pay prover_0 (absent).
    assert reward.tolist() == [[0, 0, 1], [0, 0, -4]]
    assert done.all()
    state, tables = _start(protocol, [False], prover_choice=[0])
    state, _, _ = _play(protocol, tables, state, [[0, 0, 0]], [CONT])
    _, reward, _ = _play(protocol, tables, state, [[0, 0, 0]], [REJ])
    assert reward.tolist() == [[2, 0, 1]]


def test_label_is_never_observed():
    from pvg_pipeline.pvg.scenarios.graph_isomorphism.game import OBSERVATION_KEYS

    assert "label" not in OBSERVATION_KEYS
    assert "decision" not in OBSERVATION_KEYS


def test_torch_free_protocol_names_match_the_registry():
    from pvg_pipeline.pvg.protocol_names import MULTI_ROUND, PROTOCOL_NAMES
    from pvg_pipeline.pvg.protocols import PROTOCOLS

    assert tuple(PROTOCOLS) == PROTOCOL_NAMES
    assert MULTI_ROUND <= set(PROTOCOL_NAMES)


def test_parameter_check_of_verifier_turns_agrees_with_the_protocols():
    from pvg_pipeline.pvg.protocol_names import verifier_can_decide

    for name in ("pvg", "debate", "mnip"):
        for rounds in range(1, 7):
            for minimum in range(0, 7):
                for first in (True, False):
                    try:
                        build_protocol(
                            name,
                            max_message_rounds=rounds,
                            min_message_rounds=minimum,
                            verifier_first=first,
                        )
                        valid = True
                    except ValueError:
                        valid = False
                    assert valid == verifier_can_decide(rounds, minimum, first)


def test_a_step_reads_nothing_back_to_the_host():
    """On a GPU a host read is a synchronisation per step (``one_hot`` used to
    check its indices' range that way)."""
    protocol = build_protocol("pvg", max_message_rounds=4)
    state, tables = _start(protocol, [True, False, True, False])
    with OperationCounter() as counter:
        _play(protocol, tables, state, [[0, 5]] * 4, [ACC, REJ, CONT, CONT])
    host_reads = {"_local_scalar_dense", "item", "nonzero", "is_nonzero"}
    assert counter.total > 10
    assert not host_reads & set(counter.counts), counter.counts


def test_the_message_is_the_chosen_node_of_the_active_agent():
    protocol = build_protocol("pvg", max_message_rounds=4)
    state, tables = _start(protocol, [True, False])
    active = state["active"]
    state, _, _ = _play(protocol, tables, state, [[2, 5], [7, 1]], [CONT, CONT])
    written = state["message_history"][:, 0].sum(1).flatten(1)  # (batch, 2N)
    for env in range(2):
        expected = torch.zeros(2 * N)
        for agent, node in enumerate([[2, 5], [7, 1]][env]):
            if active[env, agent]:
                expected[node] = 1.0
        assert torch.equal(written[env].clamp(max=1.0), expected), env


class _MixedDevices(TorchDispatchMode):
    """Records the operations given tensors (not 0-d scalars) on several devices."""

    def __init__(self) -> None:
        super().__init__()
        self.mixed: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        flat = [*args, *(kwargs or {}).values()]
        flat = [x for a in flat for x in (a if isinstance(a, list | tuple) else [a])]
        devices = {x.device for x in flat if isinstance(x, torch.Tensor) and x.dim()}
        if len(devices) > 1:
            self.mixed.append(f"{func}: {devices}")
        return func(*args, **(kwargs or {}))


def test_a_step_makes_its_tensors_on_the_device_of_its_inputs():
    """Inside a captured graph the state is a TensorDict without a device; a step
    must still make every tensor where its inputs are (the first GPU run of the
    captured game step failed on an index made on the CPU). The meta device
    stands in for the GPU, where mixing in a CPU tensor fails the capture."""
    protocol = build_protocol("pvg", max_message_rounds=4)
    state, tables = _start(protocol, [True, False])
    meta = TensorDict(
        {key: value.to("meta") for key, value in state.items()},
        batch_size=state.batch_size,
    )
    assert meta.device is None
    meta_tables = type(tables)(**{k: v.to("meta") for k, v in vars(tables).items()})
    nodes, decisions = torch.tensor([[2, 5], [7, 1]]), torch.tensor([CONT, CONT])
    with _MixedDevices() as mode:
        next_state, reward, done = step(
            meta, nodes.to("meta"), decisions.to("meta"), protocol, meta_tables, R
        )
    assert not mode.mixed
    tensors = [*next_state.values(), reward, done]
    assert {t.device.type for t in tensors} == {"meta"}


def _decision_rounds(protocol) -> list[int]:
    """Rounds at which a verifier decision counts, found by playing ``continue``."""
    state, tables = _start(protocol, [True])
    rounds = []
    for round_number in range(protocol.max_rounds):
        if state["decision_allowed"][0]:
            rounds.append(round_number)
        nodes = [[0] * len(protocol.agents)]
        state, _, done = _play(protocol, tables, state, nodes, [CONT])
        if done[0]:
            break
    return rounds


def test_decision_rounds_of_every_protocol():
    """With the paper-scale rounds (3..8, verifier first) a decision counts from
    round min_message_rounds - 1, as in the reference implementation."""
    rounds = {"max_message_rounds": 8, "min_message_rounds": 3}
    for name in ("pvg", "nip", "debate", "mnip"):
        assert _decision_rounds(build_protocol(name, **rounds)) == [2, 4, 6], name
        late = build_protocol(name, **rounds, decisions_from="min_rounds")
        assert _decision_rounds(late) == [4, 6], name
    prover_first = build_protocol("pvg", **rounds, verifier_first=False)
    assert _decision_rounds(prover_first) == [3, 5, 7]
    assert _decision_rounds(build_protocol("pvg", max_message_rounds=8)) == [
        0,
        2,
        4,
        6,
    ]
    assert _decision_rounds(build_protocol("adp")) == [1]
    assert _decision_rounds(build_protocol("merlin_arthur")) == [1]
    assert _decision_rounds(build_protocol("solo_verifier")) == [0]


def test_continue_reward_only_on_decision_turns_when_asked():
    protocol = build_protocol(
        "pvg", max_message_rounds=6, min_message_rounds=3, verifier_first=True
    )
    rewards = Rewards(verifier_continue=8.0, verifier_continue_turns="decision_turns")
    state, tables = _start(protocol, [True])
    paid = []
    for _ in range(4):
        state, reward, _ = step(
            state,
            torch.tensor([[0, 0]]),
            torch.tensor([CONT]),
            protocol,
            tables,
            rewards,
        )
        paid.append(reward[0, 1].item())
    # Verifier turns at rounds 0 and 2; only round 2 lets a decision count.
    assert paid == [0.0, 0.0, 8.0, 0.0]
