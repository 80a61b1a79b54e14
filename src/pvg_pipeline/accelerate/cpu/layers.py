"""The plain agents' classes with the fused CPU kernels plugged in.

Each class here subclasses one class of the plain model
(:mod:`pvg_pipeline.pvg.scenarios.graph_isomorphism.agents` and ``.layers``) and overrides one of
its steps: where the kernel applies (CPU float32, the settings it implements, not
switched off, built) it runs the kernel, elsewhere the plain step. The subclasses
add no parameters or buffers, so an accelerated agent has the plain agent's
``state_dict`` and checkpoints do not depend on the accelerator.
:func:`accelerate_agent` switches a built agent's modules to these classes in
place.
"""

from __future__ import annotations

from jaxtyping import Bool, Float, Int64
from torch import Tensor, nn

from pvg_pipeline.accelerate.cpu import attention as attention_kernel
from pvg_pipeline.accelerate.cpu import gin as gin_kernel
from pvg_pipeline.accelerate.cpu import heads as heads_kernel
from pvg_pipeline.accelerate.cpu import tokens as tokens_kernel
from pvg_pipeline.accelerate.cpu import transformer as transformer_kernel
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import (
    AgentBody,
    AgentOutput,
    GraphIsomorphismAgent,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.attention_mask import (
    AttentionMask,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.layers import (
    CrossGraphAttentionLayer,
    DenseGINLayer,
)


class FusedDenseGINLayer(DenseGINLayer):
    """The GIN layer as one kernel (:mod:`.gin`)."""

    def forward(
        self,
        features: Float[Tensor, "batch graph node feature"],
        adjacency: Float[Tensor, "batch graph node node"],
        node_mask: Bool[Tensor, "batch graph node"],
    ) -> Float[Tensor, "batch graph node feature"]:
        """The plain layer's result, fused where the kernel applies."""
        if gin_kernel.fusable(features, adjacency, self.mlp, self.activation):
            return gin_kernel.fused_gin(
                features, adjacency, node_mask, self.eps, self.mlp
            )
        return super().forward(features, adjacency, node_mask)


class FusedCrossGraphAttentionLayer(CrossGraphAttentionLayer):
    """The transformer layer as one kernel without gradients and two with them
    (:mod:`.transformer`); elsewhere the attention alone as one (:mod:`.attention`).
    """

    def forward(
        self, tokens: Float[Tensor, "batch token d_model"], mask: AttentionMask
    ) -> Float[Tensor, "batch token d_model"]:
        """The plain layer's result, fused where the kernels apply."""
        if transformer_kernel.fusable(self, tokens):  # no gradients: the whole layer
            return transformer_kernel.fused_layer(self, tokens, mask)
        if transformer_kernel.blocks_fusable(self, tokens):  # training: its two halves
            tokens = transformer_kernel.fused_attention_block(self, tokens, mask)
            return transformer_kernel.fused_feed_forward(self, tokens)
        return super().forward(tokens, mask)

    def attend(
        self, qkv: Float[Tensor, "batch token qkv"], mask: AttentionMask
    ) -> Float[Tensor, "batch token d_model"]:
        """The plain attention, fused where the kernel applies."""
        if attention_kernel.fusable(qkv):
            return attention_kernel.fused_attention(qkv, mask, self.num_heads)
        return super().attend(qkv, mask)


class FusedAgentBody(AgentBody):
    """The transformer's input tokens as one kernel (:mod:`.tokens`)."""

    def tokens(
        self,
        h: Float[Tensor, "batch 2 node d_gnn"],
        round_number: Int64[Tensor, "batch"],
    ) -> Float[Tensor, "batch token d_model"]:
        """The plain tokens, fused where the kernel applies."""
        if tokens_kernel.fusable(self, h):
            return tokens_kernel.fused_tokens(self, h, round_number)
        return super().tokens(h, round_number)


class FusedGraphIsomorphismAgent(GraphIsomorphismAgent):
    """The node, decision and value heads as one kernel (:mod:`.heads`)."""

    def heads(
        self,
        tokens: Float[Tensor, "batch token d_model"],
        real_nodes: Bool[Tensor, "batch node2"],
        round_number: Int64[Tensor, "batch"],
    ) -> AgentOutput:
        """The plain heads, fused where the kernel applies."""
        if heads_kernel.fusable(self, tokens):
            return AgentOutput(*heads_kernel.fused_heads(self, tokens, real_nodes))
        return super().heads(tokens, real_nodes, round_number)


#: Plain class -> the class with its kernel.
FUSED_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    DenseGINLayer: FusedDenseGINLayer,
    CrossGraphAttentionLayer: FusedCrossGraphAttentionLayer,
    AgentBody: FusedAgentBody,
    GraphIsomorphismAgent: FusedGraphIsomorphismAgent,
}


def accelerate_agent(agent: nn.Module) -> nn.Module:
    """Plug the fused CPU kernels into ``agent`` in place and return it.

    Every module of a plain class gets its fused subclass; nothing else changes
    (parameters, buffers, ``state_dict``). Agents of other kinds (a random prover)
    are returned as they are. Calling it twice is harmless.
    """
    for module in agent.modules():
        fused = FUSED_CLASSES.get(type(module))
        if fused is not None:
            module.__class__ = fused
    return agent


def plain_agent(agent: nn.Module) -> nn.Module:
    """Undo :func:`accelerate_agent` in place (the plain PyTorch model) and return
    ``agent``."""
    plain = {fused: base for base, fused in FUSED_CLASSES.items()}
    for module in agent.modules():
        base = plain.get(type(module))
        if base is not None:
            module.__class__ = base
    return agent
