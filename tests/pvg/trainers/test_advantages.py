"""GAE for turn-taking agents against hand-computed closed forms."""

from __future__ import annotations

import torch

from pvg_pipeline.pvg.trainers.advantages import masked_gae

G, L = 0.9, 0.8


def _single(rewards, values, dones, final, active=None):
    steps = len(rewards)
    reward = torch.tensor(rewards, dtype=torch.float32).view(steps, 1, 1)
    value = torch.tensor(values, dtype=torch.float32).view(steps, 1, 1)
    done = torch.tensor(dones).view(steps, 1)
    acted = (
        torch.ones(steps, 1, 1, dtype=torch.bool)
        if active is None
        else torch.tensor(active).view(steps, 1, 1)
    )
    adv, ret = masked_gae(reward, value, done, acted, torch.tensor([[final]]), G, L)
    return adv.view(-1).tolist(), ret.view(-1).tolist()


def test_four_step_trajectory_matches_hand_computed_gae():
    r, v, final = [1.0, 0.0, 2.0, -1.0], [0.5, 0.2, 0.1, 0.3], 0.7
    d = [r[t] + G * (v[t + 1] if t < 3 else final) - v[t] for t in range(4)]
    a3 = d[3]
    a2 = d[2] + G * L * a3
    a1 = d[1] + G * L * a2
    a0 = d[0] + G * L * a1
    adv, ret = _single(r, v, [False] * 4, final)
    torch.testing.assert_close(torch.tensor(adv), torch.tensor([a0, a1, a2, a3]))
    expected_returns = [a0 + v[0], a1 + v[1], a2 + v[2], a3 + v[3]]
    torch.testing.assert_close(torch.tensor(ret), torch.tensor(expected_returns))


def test_episode_end_stops_bootstrapping():
    r, v = [1.0, 2.0, 3.0, 4.0], [0.5, 0.6, 0.7, 0.8]
    adv, _ = _single(r, v, [False, True, False, False], final=10.0)
    d1 = r[1] - v[1]  # terminal: no bootstrap
    d0 = r[0] + G * v[1] - v[0]
    d3 = r[3] + G * 10.0 - v[3]
    d2 = r[2] + G * v[3] - v[2]
    expected = [d0 + G * L * d1, d1, d2 + G * L * d3, d3]
    torch.testing.assert_close(torch.tensor(adv), torch.tensor(expected))


def test_turn_taking_agent_collects_rewards_between_its_turns():
    # The agent acts at steps 0 and 2; rewards at steps 1 and 3 belong to the
    # previous action; the episode ends at step 3.
    r, v = [0.0, 5.0, 0.0, 7.0], [1.0, 99.0, 2.0, 99.0]
    adv, ret = _single(
        r, v, [False, False, False, True], 0.0, [True, False, True, False]
    )
    a2 = 0.0 + G * 7.0 - 2.0  # rewards to the end, no bootstrap
    a0 = (0.0 + G * 5.0) + G**2 * 2.0 - 1.0 + (G * L) ** 2 * a2
    torch.testing.assert_close(torch.tensor(adv), torch.tensor([a0, 0.0, a2, 0.0]))
    assert ret[1] == 0.0 and ret[3] == 0.0


def test_agents_are_independent():
    reward = torch.tensor([[[1.0, -1.0]], [[0.0, 3.0]]])
    value = torch.zeros(2, 1, 2)
    done = torch.tensor([[False], [True]])
    active = torch.tensor([[[True, False]], [[False, True]]])
    adv, _ = masked_gae(reward, value, done, active, torch.zeros(1, 2), G, L)
    assert adv[:, 0, 0].tolist() == [1.0 + G * 0.0, 0.0]
    assert adv[:, 0, 1].tolist() == [0.0, 3.0]
