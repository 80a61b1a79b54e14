"""The graph-isomorphism game as a batched TorchRL environment.

The environment is stateful: it keeps the full game state (label included) and
returns only observations. Episodes that end are reset in place (``_reset`` mask),
so a batch keeps running; pairs are drawn without replacement from the dataset and
reshuffled (seeded) every epoch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor
from torchrl.data import Binary, Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from pvg_pipeline.pvg.protocols import Decision, Protocol, Rewards
from pvg_pipeline.pvg.scenarios.graph_isomorphism.game import (
    OBSERVATION_KEYS,
    new_episodes,
    step,
)


class EpochSampler:
    """Dataset rows without replacement, reshuffled each epoch from a seeded generator."""

    def __init__(self, num_rows: int, generator: torch.Generator) -> None:
        if num_rows < 1:
            raise ValueError("the dataset has no pairs")
        self.num_rows = num_rows
        self.generator = generator
        self.epoch = 0
        self._order = self._shuffle()
        self._cursor = 0

    def _shuffle(self) -> Tensor:
        return torch.randperm(
            self.num_rows, generator=self.generator, device=self.generator.device
        )

    def take(self, count: int) -> Tensor:
        """The next ``count`` rows, starting a new epoch when the current one ends."""
        parts = []
        while count > 0:
            if self._cursor == self.num_rows:
                self._order, self._cursor = self._shuffle(), 0
                self.epoch += 1
            chunk = self._order[self._cursor : self._cursor + count]
            parts.append(chunk)
            self._cursor += len(chunk)
            count -= len(chunk)
        if not parts:
            return torch.zeros(0, dtype=torch.int64, device=self.generator.device)
        return torch.cat(parts)


class GraphIsomorphismEnv(EnvBase):
    """Batched prover-verifier game on graph pairs.

    Parameters
    ----------
    pairs
        A loaded ``graph_pairs_*`` dataset (``adjacency``, ``sizes``,
        ``is_isomorphic``).
    protocol
        Who acts when, channels, reward rules.
    rewards
        Reward constants.
    batch_size
        Number of games played in parallel.
    seed
        Seed of the pair order and of Merlin-Arthur's prover draws.
    device
        Where the state lives.

    Observations: ``adjacency``, ``node_mask``, ``message_history``, ``round``,
    ``active`` (whose turn), ``decision_allowed``. Actions: ``node`` (one message per
    agent, ``(batch, agent)``) and ``decision`` (verifier: reject/accept/continue).
    Reward: ``(batch, agent)``.
    """

    def __init__(
        self,
        pairs: Mapping[str, Tensor],
        protocol: Protocol,
        rewards: Rewards,
        batch_size: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(device=device, batch_size=torch.Size([batch_size]))
        self.protocol = protocol
        self.reward_constants = rewards
        self.tables = protocol.tensors(self.device)
        self._adjacency = pairs["adjacency"].to(self.device, torch.bool)
        self._sizes = pairs["sizes"].to(self.device, torch.int64)
        self._labels = pairs["is_isomorphic"].to(self.device, torch.bool)
        self.max_nodes = self._adjacency.shape[-1]
        self._generator = torch.Generator(device=self.device)
        self._set_seed(seed)
        self._state: TensorDict | None = None
        #: Each running episode's rewards so far (a collection that ends
        #: mid-episode hands it on to the next).
        self.episode_return = torch.zeros(
            batch_size, len(protocol.agents), device=self.device
        )
        self._make_specs()

    @property
    def state(self) -> TensorDict:
        """The full game state (with labels): for evaluation, never for agents."""
        if self._state is None:
            raise RuntimeError("call reset() first")
        return self._state

    @property
    def epoch(self) -> int:
        """Completed passes over the dataset."""
        return self._sampler.epoch

    def _make_specs(self) -> None:
        b, n = self.batch_size[0], self.max_nodes
        agents, rounds = len(self.protocol.agents), self.protocol.max_rounds
        channels = len(self.protocol.channels)
        shape, d = self.batch_size, self.device  # every spec on the env device
        self.observation_spec = Composite(
            adjacency=Binary(shape=(b, 2, n, n), dtype=torch.bool, device=d),
            node_mask=Binary(shape=(b, 2, n), dtype=torch.bool, device=d),
            message_history=Bounded(
                0.0, 1.0, shape=(b, rounds, channels, 2, n), device=d
            ),
            round=Bounded(0, rounds, shape=(b,), dtype=torch.int64, device=d),
            active=Binary(shape=(b, agents), dtype=torch.bool, device=d),
            decision_allowed=Binary(shape=(b,), dtype=torch.bool, device=d),
            shape=shape,
            device=self.device,
        )
        self.action_spec = Composite(
            node=Categorical(2 * n, shape=(b, agents), device=d),
            decision=Categorical(len(Decision), shape=(b,), device=d),
            shape=shape,
            device=self.device,
        )
        self.reward_spec = Unbounded(shape=(b, agents), device=self.device)
        self.done_spec = Composite(
            done=Categorical(2, shape=(b, 1), dtype=torch.bool, device=d),
            terminated=Categorical(2, shape=(b, 1), dtype=torch.bool, device=d),
            shape=shape,
            device=self.device,
        )

    def sampling_state(self) -> dict:
        """Generator state, dataset-sampler position and the running episodes
        (for checkpoints)."""
        saved = {
            "generator": self._generator.get_state(),
            "order": self._sampler._order.cpu(),
            "cursor": self._sampler._cursor,
            "epoch": self._sampler.epoch,
        }
        if self._state is not None:
            saved["game"] = {k: v.cpu() for k, v in self._state.items()}
            saved["episode_return"] = self.episode_return.cpu()
        return saved

    def load_sampling_state(self, saved: dict) -> None:
        """Continue drawing pairs and playing the running episodes exactly where
        :meth:`sampling_state` was taken."""
        self._generator.set_state(saved["generator"])
        self._sampler._order = saved["order"].to(self.device)
        self._sampler._cursor = saved["cursor"]
        self._sampler.epoch = saved["epoch"]
        if "game" in saved:
            self._state = TensorDict(
                {k: v.to(self.device) for k, v in saved["game"].items()},
                batch_size=self.batch_size,
                device=self.device,
            )
            self.episode_return = saved["episode_return"].to(self.device)

    def _set_seed(self, seed: int | None) -> None:
        self._generator.manual_seed(int(seed or 0))
        self._sampler = EpochSampler(len(self._labels), self._generator)

    def _new_states(self, count: int) -> TensorDict:
        rows = self._sampler.take(count)
        num_provers = len(self.protocol.provers)
        choice = torch.randint(
            max(num_provers, 1), (count,), generator=self._generator, device=self.device
        )
        return new_episodes(
            self._adjacency[rows],
            self._sizes[rows],
            self._labels[rows],
            rows,
            choice,
            self.protocol,
            self.tables,
        )

    def replace_finished(self, state: TensorDict, finished: Tensor) -> TensorDict:
        """A copy of ``state`` where finished episodes are new ones (same RNG use as
        a masked ``reset``); ``state`` itself is never modified."""
        where = finished.nonzero().squeeze(1)  # (one host sync on a GPU)
        if len(where) == 0:
            return state
        fresh = self._new_states(len(where))
        # Out of place, key by key: earlier observations share tensors with the
        # old state and must not change.
        return TensorDict(
            {
                key: value.index_put((where,), fresh[key])
                for key, value in state.items()
            },
            batch_size=state.batch_size,
            device=state.device,
        )

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDict:
        batch = self.batch_size[0]
        reset = None
        if tensordict is not None and "_reset" in tensordict.keys():
            reset = tensordict["_reset"].reshape(batch)
        if self._state is None or reset is None or bool(reset.all()):
            self._state = self._new_states(batch)
            self.episode_return = torch.zeros_like(self.episode_return)
        else:
            self._state = self.replace_finished(self._state, reset)
        return self._observation(
            torch.zeros(batch, 1, dtype=torch.bool, device=self.device)
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        self._state, reward, done = step(
            self.state,
            tensordict["node"],
            tensordict["decision"],
            self.protocol,
            self.tables,
            self.reward_constants,
        )
        out = self._observation(done[:, None])
        out["reward"] = reward
        return out

    def _observation(self, done: Tensor) -> TensorDict:
        out = self.state.select(*OBSERVATION_KEYS).clone(recurse=False)
        out["done"] = done
        out["terminated"] = done.clone()
        return out
