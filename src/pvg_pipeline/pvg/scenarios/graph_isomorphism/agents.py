"""Agent networks for the graph-isomorphism game.

Per agent: dense GIN encoder over each graph -> sum pooling (optional batch norm)
-> pair-invariant pooled tokens (mean, |difference| / 2) -> transformer over
[2 pooled tokens, nodes of A, nodes of B] where nodes attend only to the other
graph's nodes and the pooled tokens -> heads: node selector (one logit per node),
decider (verifier only: reject / accept / continue) and value.

Three options follow the reference implementation where the defaults do not:
``node_selector_layers: 2`` (an MLP instead of one linear layer),
``round_in_heads`` (a one-hot of the round joins the decider's and value head's
input) and ``most_recent_message_flag`` (a per-node feature for the message of
the previous round).

This is the plain PyTorch model. The optional CPU accelerator
(:mod:`pvg_pipeline.accelerate.cpu`) plugs fused kernels into it from outside,
by overriding the steps that the classes here and in :mod:`.layers` expose as
methods (:meth:`DenseGINLayer.forward`, :meth:`CrossGraphAttentionLayer.forward` and
``attend``, :meth:`AgentBody.tokens`, :meth:`GraphIsomorphismAgent.heads`).

Node features are the messages of the channels the agent can see, so a channel the
agent cannot see never enters its computation. Graphs have at most ~15 nodes, so
everything is dense batched matmuls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int64
from torch import Tensor, nn

from pvg_pipeline.pvg.protocols import Decision
from pvg_pipeline.pvg.scenarios.graph_isomorphism.attention_mask import (
    POOLED_TOKENS,
    AttentionMask,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.layers import (
    CrossGraphAttentionLayer,
    DenseGINLayer,
    mlp,
    node_selector,
)


@dataclass(frozen=True)
class AgentArchitecture:
    """Architecture hyperparameters of one agent (paper-scale defaults).

    Attributes
    ----------
    activation
        ``relu`` or ``tanh``, in every MLP (GIN, transformer, heads).
    batch_norm
        Batch norm of the pooled GIN output. PPO keeps the agents in evaluation
        mode, so there it is a fixed per-channel affine map with the initial
        running statistics (mean 0, variance 1) and a learned scale and shift
        (the solo-agent trainer uses batch statistics).
    node_selector_layers
        Linear layers of the node selector: 1 is one linear map per node; more
        put the activation between layers of hidden width ``d_transformer`` (the
        reference's node selector: 2 layers, hidden width 16).
    round_in_heads
        Concatenate a one-hot of the round (``max_rounds + 1`` classes) to the
        decider's and the value head's input, as the reference does.
    most_recent_message_flag
        One more input feature per node and visible channel: 1 where the node
        was sent in the previous round (the most recent message), else 0. The
        reference adds it to the transformer's input tokens; here it joins the
        message history at the network's input.
    answer_in_other_graph
        The agent may choose only nodes of the other graph than the one the most
        recent message (the previous round's, in the channels it sees) points
        into: a prover then always answers a question about one graph with a node
        of the other. Not in the reference implementation; off by default.
    observation_normalisation
        Standardise the message features (history and flag) with one mean and
        standard deviation, fitted by the PPO trainer from random play before
        training and saved with the weights, as the reference's observation
        normalisation does.
    """

    num_gnn_layers: int = 2
    d_gnn: int = 16
    d_gin_mlp: int = 64
    num_transformer_layers: int = 1
    num_heads: int = 4
    d_transformer: int = 16
    d_transformer_mlp: int = 64
    activation: str = "relu"
    batch_norm: bool = True
    orthogonal_init: bool = True
    node_selector_layers: int = 1
    round_in_heads: bool = False
    most_recent_message_flag: bool = False
    observation_normalisation: bool = False
    answer_in_other_graph: bool = False


@dataclass(frozen=True)
class GameShape:
    """Sizes fixed by the dataset and protocol."""

    max_nodes: int
    max_rounds: int
    visible_channels: tuple[int, ...]


@dataclass
class AgentOutput:
    """What an agent computes on a batch of observations."""

    node_logits: Float[Tensor, "batch two_nodes"]
    decision_logits: Float[Tensor, "batch 3"] | None
    value: Float[Tensor, "batch"]


class AgentBody(nn.Module):
    """GIN encoder, pair-invariant pooling and the cross-graph transformer."""

    def __init__(self, arch: AgentArchitecture, d_input: int, max_rounds: int) -> None:
        super().__init__()
        self.arch = arch
        act = arch.activation
        dims = [d_input] + [arch.d_gnn] * arch.num_gnn_layers
        self.gin = nn.ModuleList(
            DenseGINLayer(dims[i], arch.d_gin_mlp, dims[i + 1], act)
            for i in range(arch.num_gnn_layers)
        )
        self.pool_norm = nn.BatchNorm1d(dims[-1]) if arch.batch_norm else nn.Identity()
        self.node_in = nn.Linear(dims[-1], arch.d_transformer)
        self.pool_in = nn.Linear(dims[-1], arch.d_transformer)
        self.round_embedding = nn.Embedding(max_rounds + 1, arch.d_transformer)
        self.transformer = nn.ModuleList(
            CrossGraphAttentionLayer(
                arch.d_transformer, arch.num_heads, arch.d_transformer_mlp, act
            )
            for _ in range(arch.num_transformer_layers)
        )

    def forward(
        self,
        node_features: Float[Tensor, "batch 2 node feature"],
        adjacency: Bool[Tensor, "batch 2 node node"],
        node_mask: Bool[Tensor, "batch 2 node"],
        round_number: Int64[Tensor, "batch"],
    ) -> Float[Tensor, "batch token d_model"]:
        """Return the transformer's output: the 2 pooled tokens, then the ``2 N``
        node tokens."""
        adjacency = adjacency.to(node_features.dtype)
        h = node_features * node_mask[..., None]
        for layer in self.gin:
            h = layer(h, adjacency, node_mask)
        tokens = self.tokens(h, round_number)
        mask = AttentionMask(node_mask)
        for layer in self.transformer:
            tokens = layer(tokens, mask)
        return tokens

    def tokens(
        self,
        h: Float[Tensor, "batch 2 node d_gnn"],
        round_number: Int64[Tensor, "batch"],
    ) -> Float[Tensor, "batch token d_model"]:
        """The transformer's input: 2 pooled tokens (with the round embedding),
        then the ``2 N`` node tokens."""
        batch, _, n, d_gnn = h.shape
        pooled = self.pool_norm(h.sum(dim=2).reshape(batch * 2, d_gnn))
        pooled = pooled.view(batch, 2, d_gnn)
        # Pair-invariant: swapping the graphs leaves (mean, |difference| / 2) unchanged.
        pair = torch.stack(
            [pooled.mean(dim=1), (pooled[:, 0] - pooled[:, 1]).abs() / 2], dim=1
        )
        return torch.cat(
            [
                self.pool_in(pair) + self.round_embedding(round_number)[:, None],
                self.node_in(h.reshape(batch, 2 * n, d_gnn)),
            ],
            dim=1,
        )


class GraphIsomorphismAgent(nn.Module):
    """One agent: input projection of visible messages, a body, and heads.

    Parameters
    ----------
    arch
        Architecture hyperparameters.
    shape
        Dataset/protocol sizes and the channels this agent sees.
    is_verifier
        Adds the decider head.
    body
        A body to share with other agents; a new one is built when ``None``.
    """

    def __init__(
        self,
        arch: AgentArchitecture,
        shape: GameShape,
        is_verifier: bool,
        body: AgentBody | None = None,
    ) -> None:
        super().__init__()
        self.shape = shape
        self.is_verifier = is_verifier
        self.register_buffer(
            "visible",
            torch.tensor(shape.visible_channels, dtype=torch.int64),
            persistent=False,
        )
        self.most_recent_message_flag = arch.most_recent_message_flag
        self.answer_in_other_graph = arch.answer_in_other_graph
        self.round_in_heads = arch.round_in_heads
        d_messages = shape.max_rounds * len(shape.visible_channels)
        if arch.most_recent_message_flag:
            d_messages += len(shape.visible_channels)
        self.body = (
            body if body is not None else AgentBody(arch, arch.d_gnn, shape.max_rounds)
        )
        self.observation_normalisation = arch.observation_normalisation
        if arch.observation_normalisation:
            # Identity until the trainer fits them; saved with the weights.
            self.register_buffer("observation_mean", torch.zeros(()))
            self.register_buffer("observation_std", torch.ones(()))
        # Messages plus a constant feature (so an empty history still has signal).
        self.input = nn.Linear(d_messages + 1, self.body.arch.d_gnn)
        d_model = self.body.arch.d_transformer
        act = arch.activation
        self.node_head = node_selector(d_model, arch.node_selector_layers, act)
        d_summary = 2 * d_model + (shape.max_rounds + 1 if arch.round_in_heads else 0)
        self.value_head = mlp(d_summary, arch.d_transformer_mlp, 1, act)
        self.decision_head = (
            mlp(d_summary, arch.d_transformer_mlp, len(Decision), act)
            if is_verifier
            else None
        )
        if arch.orthogonal_init:
            _orthogonal_init(self)

    def message_features(
        self,
        message_history: Float[Tensor, "batch round channel 2 node"],
        round_number: Int64[Tensor, "batch"],
    ) -> Float[Tensor, "batch 2 node feature"]:
        """Per node: the visible message history (and the most-recent flag)."""
        batch, _, _, _, n = message_history.shape
        seen = message_history.index_select(2, self.visible)
        features = seen.permute(0, 3, 4, 1, 2).reshape(batch, 2, n, -1)
        if not self.most_recent_message_flag:
            return features
        return torch.cat([features, _most_recent(seen, round_number)], dim=-1)

    def forward(
        self,
        adjacency: Bool[Tensor, "batch 2 node node"],
        node_mask: Bool[Tensor, "batch 2 node"],
        message_history: Float[Tensor, "batch round channel 2 node"],
        round_number: Int64[Tensor, "batch"],
    ) -> AgentOutput:
        """Compute node logits (padding = -inf), decision logits and value."""
        batch = message_history.shape[0]
        n = message_history.shape[-1]
        features = self.message_features(message_history, round_number)
        if self.observation_normalisation:
            features = (features - self.observation_mean) / self.observation_std
        features = torch.cat([features, torch.ones_like(features[..., :1])], dim=-1)
        tokens = self.body(
            _project(features, self.input), adjacency, node_mask, round_number
        )
        selectable = self.selectable_nodes(node_mask, message_history, round_number)
        return self.heads(tokens, selectable.reshape(batch, 2 * n), round_number)

    def selectable_nodes(
        self,
        node_mask: Bool[Tensor, "batch 2 node"],
        message_history: Float[Tensor, "batch round channel 2 node"],
        round_number: Int64[Tensor, "batch"],
    ) -> Bool[Tensor, "batch 2 node"]:
        """The nodes the agent may choose: every real node, or with
        ``answer_in_other_graph`` those of the graph the most recent message does
        not point into (when it points into exactly one)."""
        if not self.answer_in_other_graph:
            return node_mask
        seen = message_history.index_select(2, self.visible)
        asked = _most_recent(seen, round_number).flatten(2).sum(-1) > 0
        blocked = asked & (asked.sum(-1) == 1)[:, None]
        return node_mask & ~blocked[:, :, None]

    def heads(
        self,
        tokens: Float[Tensor, "batch token d_model"],
        real_nodes: Bool[Tensor, "batch node2"],
        round_number: Int64[Tensor, "batch"],
    ) -> AgentOutput:
        """Node logits (padding = -inf), decision logits and value from the
        transformer's output."""
        batch = tokens.shape[0]
        n = real_nodes.shape[1] // 2
        # One split, not two slices: its backward is one cat instead of two
        # zero-filled (batch, token, d_model) gradients and their sum.
        pooled, nodes = tokens.split([POOLED_TOKENS, 2 * n], dim=1)
        logits = self.node_head(nodes).squeeze(-1)
        logits = logits.masked_fill(~real_nodes, float("-inf"))
        summary = pooled.reshape(batch, 2 * pooled.shape[-1])
        if self.round_in_heads:
            rounds_one_hot = _one_hot(round_number, self.shape.max_rounds + 1)
            summary = torch.cat([summary, rounds_one_hot.to(summary.dtype)], dim=-1)
        decision = (
            self.decision_head(summary) if self.decision_head is not None else None
        )
        return AgentOutput(logits, decision, self.value_head(summary).squeeze(-1))


def _most_recent(
    seen: Float[Tensor, "batch round channel 2 node"],
    round_number: Int64[Tensor, "batch"],
) -> Float[Tensor, "batch 2 node channel"]:
    """The message of the round before ``round_number`` in each channel (zeros in
    round 0, which has none)."""
    batch, rounds = seen.shape[:2]
    previous = (round_number - 1).clamp(0, rounds - 1)
    rows = torch.arange(batch, device=seen.device)
    recent = seen[rows, previous] * (round_number > 0)[:, None, None, None]
    return recent.permute(0, 2, 3, 1)


def _one_hot(
    round_number: Int64[Tensor, "batch"], classes: int
) -> Bool[Tensor, "batch classes"]:
    # A comparison, not ``F.one_hot``: that checks the values on the host, which
    # a CUDA graph cannot capture.
    return round_number[:, None] == torch.arange(classes, device=round_number.device)


def _project(
    features: Float[Tensor, "*rows d_in"], layer: nn.Linear
) -> Float[Tensor, "*rows d_out"]:
    """``layer(features)`` for many rows of a few features, arranged so that the
    weight gradient is computed as ``features^T @ grad``: for a Linear layer
    autograd computes ``grad^T @ features``, which BLAS runs ~5x slower when the
    inputs are this narrow (5 632 rows of 9 features: 205 vs 42 µs)."""
    rows = features.reshape(-1, features.shape[-1])
    out = torch.addmm(layer.bias, rows, layer.weight.t().contiguous())
    return out.view(*features.shape[:-1], layer.out_features)


def _orthogonal_init(module: nn.Module) -> None:
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.orthogonal_(sub.weight)
            nn.init.zeros_(sub.bias)
