"""Acting for all agents of a protocol, running each network only where it acts."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from jaxtyping import Bool, Float
from tensordict import TensorDictBase
from torch import Tensor, nn

from pvg_pipeline.pvg.protocols import Decision, Protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import AgentOutput


class RandomAgent(nn.Module):
    """Uniform over legal actions: real nodes, and reject/accept/continue.

    Its logits carry fresh Gumbel noise at every call, so that greedy play
    (evaluation) is a uniform draw too, not always the first legal action; sampled
    play stays uniform. Its log-probabilities are not those of its policy, which
    does not matter: it has nothing to train.
    """

    def __init__(self, is_verifier: bool) -> None:
        super().__init__()
        self.is_verifier = is_verifier

    def forward(
        self,
        adjacency: Tensor,
        node_mask: Bool[Tensor, "batch 2 node"],
        message_history: Tensor,
        round_number: Tensor,
    ) -> AgentOutput:
        """Gumbel noise as logits for every legal action; value 0."""
        batch = node_mask.shape[0]
        legal = node_mask.flatten(1)
        logits = _gumbel(legal.shape, node_mask.device)
        logits = logits.masked_fill(~legal, float("-inf"))
        decision = _gumbel((batch, len(Decision)), node_mask.device)
        return AgentOutput(
            logits,
            decision if self.is_verifier else None,
            torch.zeros(batch, device=node_mask.device),
        )


def _gumbel(shape: tuple[int, ...], device: torch.device) -> Tensor:
    uniform = torch.rand(shape, device=device).clamp_min(torch.finfo().tiny)
    return -(-uniform.log()).log()


def restrict_decisions(
    logits: Float[Tensor, "batch 3"], allowed: Bool[Tensor, "batch"]
) -> Float[Tensor, "batch 3"]:
    """Where a decision cannot count, only ``continue`` has probability (log-prob 0)."""
    # Built on the device (no host-to-device copy, so CUDA graphs can hold it).
    is_verdict = torch.arange(logits.shape[-1], device=logits.device) != int(
        Decision.CONTINUE
    )
    return logits.masked_fill(is_verdict & ~allowed[:, None], float("-inf"))


def action_log_prob(
    output: AgentOutput,
    node: Tensor,
    decision: Tensor,
    decision_allowed: Bool[Tensor, "batch"],
) -> tuple[Float[Tensor, "batch"], Float[Tensor, "batch"], Float[Tensor, "batch"]]:
    """Log-probability of an agent's action, its entropy and its decision entropy.

    The action is the message node, plus the decision for the verifier (decisions
    that cannot count have probability 1, so they add nothing).
    """
    # One log-softmax per distribution, shared by the log-probability and entropy.
    log_p = output.node_logits.log_softmax(-1)
    log_prob = _chosen(log_p, node)
    entropy = _entropy(log_p)
    decision_entropy = torch.zeros_like(log_prob)
    if output.decision_logits is not None:
        logits = restrict_decisions(output.decision_logits, decision_allowed)
        log_p = logits.log_softmax(-1)
        log_prob = log_prob + _chosen(log_p, decision)
        decision_entropy = _entropy(log_p)
        entropy = entropy + decision_entropy
    return log_prob, entropy, decision_entropy


def sample_categorical(logits: Float[Tensor, "batch n"], greedy: bool) -> Tensor:
    """Gumbel-max sampling (or argmax); ``-inf`` logits are never chosen.

    Unlike ``torch.distributions.Categorical`` it works on empty batches and has
    no data-dependent checks.
    """
    if greedy:
        return logits.argmax(-1)
    uniform = torch.rand_like(logits).clamp_min(torch.finfo(logits.dtype).tiny)
    return (logits - (-uniform.log()).log()).argmax(-1)


def categorical_log_prob(logits: Float[Tensor, "batch n"], action: Tensor) -> Tensor:
    """Log-probability of ``action`` under ``softmax(logits)``."""
    return _chosen(logits.log_softmax(-1), action)


def categorical_entropy(logits: Float[Tensor, "batch n"]) -> Tensor:
    """Entropy of ``softmax(logits)``; impossible actions contribute 0."""
    return _entropy(logits.log_softmax(-1))


def _chosen(log_p: Float[Tensor, "batch n"], action: Tensor) -> Tensor:
    return log_p.gather(-1, action[:, None]).squeeze(-1)


def _entropy(log_p: Float[Tensor, "batch n"]) -> Tensor:
    p = log_p.exp()
    # Mask before multiplying: 0 * -inf would poison the gradient with NaN.
    return -(p * torch.where(p > 0, log_p, 0.0)).sum(-1)


class MultiAgentPolicy(nn.Module):
    """Samples every agent's action for a batch of observations.

    Parameters
    ----------
    agents
        Agent name -> network (or :class:`RandomAgent`), for every protocol agent.
    protocol
        Gives the agent order and which agent is the verifier.
    only_active
        Run each network only on the environments where its agent acts (default).
        ``False`` runs every agent on every environment and discards the inactive
        outputs: same actions' distribution, more compute (kept for benchmarks).

    Writes ``node`` ``(batch, agent)``, ``decision`` ``(batch,)``, ``log_prob`` and
    ``value`` ``(batch, agent)``; inactive agents get node 0, log-prob 0, value 0.
    """

    def __init__(
        self,
        agents: Mapping[str, nn.Module],
        protocol: Protocol,
        only_active: bool = True,
    ) -> None:
        super().__init__()
        missing = set(protocol.agents) - set(agents)
        if missing:
            raise ValueError(
                f"protocol {protocol.name} needs agents {list(protocol.agents)}; "
                f"missing {sorted(missing)}"
            )
        self.protocol = protocol
        self.agents = nn.ModuleDict({name: agents[name] for name in protocol.agents})
        self.only_active = only_active
        self.deterministic = False

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Fill the action keys of ``tensordict`` in place and return it."""
        active = tensordict["active"]
        batch, num_agents = active.shape
        device = active.device
        node = torch.zeros(batch, num_agents, dtype=torch.int64, device=device)
        log_prob = torch.zeros(batch, num_agents, device=device)
        value = torch.zeros(batch, num_agents, device=device)
        decision = torch.full((batch,), int(Decision.CONTINUE), device=device)
        for index, agent in enumerate(self.agents.values()):
            rows = (
                active[:, index].nonzero().squeeze(1)
                if self.only_active
                else torch.arange(batch, device=device)
            )
            if rows.numel() == 0:
                # This agent acts nowhere (at the start of a collection every game
                # is at the same turn): a call costs ~1-2 ms on the CPU even so.
                continue
            output = agent(
                tensordict["adjacency"][rows],
                tensordict["node_mask"][rows],
                tensordict["message_history"][rows],
                tensordict["round"][rows],
            )
            chosen, chosen_log_prob = self._sample(output.node_logits)
            keep = active[rows, index]
            if output.decision_logits is not None:
                logits = restrict_decisions(
                    output.decision_logits, tensordict["decision_allowed"][rows]
                )
                verdict, verdict_log_prob = self._sample(logits)
                decision[rows] = torch.where(keep, verdict, int(Decision.CONTINUE))
                chosen_log_prob = chosen_log_prob + verdict_log_prob
            node[rows, index] = torch.where(keep, chosen, 0)
            log_prob[rows, index] = torch.where(keep, chosen_log_prob, 0.0)
            value[rows, index] = torch.where(keep, output.value, 0.0)
        tensordict["node"] = node
        tensordict["decision"] = decision
        tensordict["log_prob"] = log_prob
        tensordict["value"] = value
        return tensordict

    def _sample(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        action = sample_categorical(logits, self.deterministic)
        return action, categorical_log_prob(logits, action)
